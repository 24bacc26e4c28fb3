"""stamp-bpf: STAMP (RFC 8762) with eBPF TC timestamps."""

__version__ = "0.1.0"
