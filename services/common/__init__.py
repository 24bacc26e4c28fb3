"""stamp-bpf common."""
