# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch for development and CI; on a cluster install your CUDA build of torch first.
# tests/constraints.txt pins the versions CI was proven with.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test setup clean

$(BIN)/.lakd-installed: pyproject.toml tests/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[test]' -c tests/constraints.txt
	touch $@

setup: $(BIN)/.lakd-installed

demo: setup
	$(BIN)/lakd demo $(DEMO_ARGS)

test: setup
	PATH="$(abspath $(BIN)):$$PATH" bash tests/run.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs shards/out
