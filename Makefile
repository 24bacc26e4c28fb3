# stamp-bpf: the two commands of the README, and a few more.
#   make demo   install everything, then a live demo in network namespaces
#   make test   install everything, then the whole test suite
#   make unit   the fast tests only (pytest -m unit): no root, no setup, seconds
#   make bench  install everything, then the benchmarks (prints one table)
# Everything but `make unit` needs root: namespaces, BPF, TC and apt-get.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all setup demo test unit bench ebpf clean

all: test

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m stamp_bpf.lab.demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

# No setup: the venv's editable install already runs this checkout's code.
unit:
	$(PY) -m pytest tests -m unit -q $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Print the C and cflags each service would load.
ebpf: setup
	$(VENV)/bin/stamp-sender lo 127.0.0.1 --ebpf
	$(VENV)/bin/stamp-reflector lo --ebpf

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .tools
