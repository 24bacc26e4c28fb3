"""stamp-bpf reflector."""
