# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch for development and CI; on a cluster install your CUDA build of torch first.
# tests/constraints.txt pins the versions CI was proven with.
TORCH_SPEC ?= torch==2.13.0
# extra pip arguments for the torch install, e.g. the package index of PyTorch's CPU wheels (see README.md)
TORCH_PIP_ARGS ?=

.PHONY: demo test setup clean

$(BIN)/.lakd-installed: pyproject.toml tests/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e . -c tests/constraints.txt
	touch $@

# the test extras (pytest, Triton for the kernel tests under TRITON_INTERPRET=1, webdataset): `make test` only
$(BIN)/.lakd-test-installed: $(BIN)/.lakd-installed
	$(BIN)/pip install -q -e '.[test]' -c tests/constraints.txt
	touch $@

setup: $(BIN)/.lakd-installed

demo: setup
	$(BIN)/lakd demo $(DEMO_ARGS)

test: $(BIN)/.lakd-test-installed
	PATH="$(abspath $(BIN)):$$PATH" bash tests/run.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs shards/out
