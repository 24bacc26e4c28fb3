"""stamp-bpf lab."""
