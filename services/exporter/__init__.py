"""stamp-bpf exporter."""
