"""stamp-bpf supervisor."""
