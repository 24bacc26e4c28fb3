"""stamp-bpf sender."""
