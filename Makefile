VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-all tensorboard report bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m '' $(ARGS)

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

# make report SWEEP=outputs/multirun/<time> [ARGS="--out DIR"]: report.md + PNGs of a sweep
report: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make report SWEEP=<sweep dir, e.g. outputs/multirun/<time>>"; exit 2; }
	$(PY) -m autoreg.analysis.report $(SWEEP) $(ARGS)

# make bench [QUALITY=<steps>]: experiments/benchmarks/train_speed.md (autoreg vs the lab's program;
# QUALITY: steps of the fp32-vs-bf16 val NLL check, 0 skips it) and model_speed(_bf16).md (PixelCNN vs
# PixelRNN, fp32 and bf16). Run it on an otherwise idle machine.
bench: $(STAMP)
	$(PY) experiments/benchmarks/train_speed.py --out experiments/benchmarks/train_speed.md$(if $(QUALITY), --quality $(QUALITY))
	$(PY) experiments/benchmarks/model_speed.py --cells lstm gru --out experiments/benchmarks/model_speed.md
	$(PY) experiments/benchmarks/model_speed.py --cells lstm gru --bf16 --out experiments/benchmarks/model_speed_bf16.md

clean:
	rm -rf outputs/*/ .pytest_cache
