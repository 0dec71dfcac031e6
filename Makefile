VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-all tensorboard report clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m '' $(ARGS)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

# make report SWEEP=outputs/multirun/<time> [ARGS="--out DIR"]: report.md + PNGs of a sweep
report: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir, e.g. outputs/multirun/<time>>"; exit 2; }
	$(PY) -m autoreg.analysis.report $(SWEEP) $(ARGS)

clean:
	rm -rf outputs/*/ .pytest_cache
