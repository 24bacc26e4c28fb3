"""BPF C sources, shipped as package data."""
