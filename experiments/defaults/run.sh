#!/usr/bin/env bash
# Which PixelCNN should `python train.py` train? Every candidate gets the same CPU time on the
# offline MNIST data; we compare validation NLL at the end (lowest val NLL per CPU-minute).
# Run from the repo root on an otherwise idle machine:  bash experiments/defaults/run.sh
set -euo pipefail
BUDGET=${BUDGET:-00:00:03:00}   # DD:HH:MM:SS per job
OUT=${OUT:-outputs/defaults}
COMMON=(data.source=bundled trainer.max_time=$BUDGET trainer.max_epochs=1000 trainer.val_check_interval=0.25
        callbacks.samples.num=0 callbacks.progress_bar.refresh_rate=0)
PY=${PY:-.venv/bin/python}
$PY train.py -m model.depth=2,4,8 model.channels=64 "${COMMON[@]}" hydra.sweep.dir=$OUT/depth
$PY train.py -m model.depth=4 model.channels=32,128 "${COMMON[@]}" hydra.sweep.dir=$OUT/width
$PY train.py -m +experiment=lab "${COMMON[@]}" hydra.sweep.dir=$OUT/lab
for d in depth width lab; do $PY -m autoreg.analysis.report $OUT/$d; done
