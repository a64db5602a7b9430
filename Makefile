# One venv, two entry points: `make quickstart` and `make test`.
# TORCH_SPEC picks the torch build: the default is the CPU build these machines carry;
# on a GPU box use e.g. `make TORCH_SPEC="torch>=2.4,<3" quickstart`.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quickstart demo test lint benchmark clean

$(BIN)/dwsfusion: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/dwsfusion

# The whole workflow on sample pairs (or `make quickstart ARGS="source=DIR"`), local Ray + SQLite MLflow.
quickstart: install
	$(BIN)/dwsfusion pipeline run --config configs/quickstart.yaml $(ARGS)

# The Ray-free demo: samples -> 120 training steps -> fuse -> metric table, one process.
demo: install
	$(BIN)/dwsfusion quickstart

lint: install
	$(BIN)/ruff check .

# The default suite, then the simulated multi-node cluster (tests/ray/test_multinode.py).
test: lint
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -m multinode

# Every CPU benchmark (tens of minutes), then docs/performance.md from their results.
benchmark: install
	$(BIN)/python benchmarks/train_step_speed.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/fuse_speed.py
	$(BIN)/python benchmarks/fuse_engines.py
	$(BIN)/python benchmarks/fuse_whole_process.py
	$(BIN)/python benchmarks/metric_speed.py
	$(BIN)/python benchmarks/batch_fuse_speed.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) runs build *.egg-info
