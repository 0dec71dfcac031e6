#!/usr/bin/env bash
# Sample quality beside the likelihood for the post-lab study (experiments/post_lab/report.md,
# "Sample quality"): the depth and kernel sweeps re-run at the quick budget (1200 steps of batch 32,
# offline MNIST subset, one CPU thread per job), training seeds 0 and 1, then every job's best.ckpt scored with
# autoreg.analysis.quality (400 fast samples, seeds 0, 1, 2) and the sweep reports regenerated with the
# quality columns and their rank correlation with val/nll; the Row LSTM and the Diagonal BiLSTM with LSTM
# and GRU cells too, and the lab's own network after its default training as a reference.
# kernel=3 is depth=4 (the same config), so the kernel sweep runs 5, 7, 9 and quality_table.py
# reads the depth-4 job as its kernel-3 row.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
OUT=experiments/post_lab/quality

$PY -m autoreg.analysis.classifier data=mnist data.source=bundled   # outputs/classifiers/mnist_1bit_static_bundled.pt
for seed in 0 1; do   # training seeds; seed 1 goes to quality_<sweep>_seed1
  sfx=$([ $seed = 0 ] || echo _seed$seed)
  $PY train.py -m +experiment=depth_sweep_quick seed=$seed hydra.sweep.dir=outputs/multirun/quality_depth_sweep$sfx
  $PY train.py -m +experiment=kernel_sweep_quick model.kernel=5,7,9 seed=$seed hydra.sweep.dir=outputs/multirun/quality_kernel_sweep$sfx
  $PY train.py -m +experiment=rnn_cell_sweep_quick model.arch=row_lstm model.cell=lstm,gru seed=$seed \
    hydra.sweep.dir=outputs/multirun/quality_rnn_cell_sweep$sfx
  # the Diagonal BiLSTM (fast sampler since session 6; its seed-0 LSTM job was also scored by the callback
  # with callbacks.sample_quality.method=naive, ~30 min, as a check: the same scores)
  $PY train.py -m +experiment=rnn_cell_sweep_quick model.arch=diagonal_bilstm model.cell=lstm,gru seed=$seed \
    hydra.sweep.dir=outputs/multirun/quality_dbilstm_sweep$sfx
done
# the lab's network after its default training (20 epochs of batch 64; 76 min here with 2 threads)
OMP_NUM_THREADS=2 $PY train.py +experiment=lab
lab="$(ls -d outputs/runs/*_+experiment=lab | tail -1)/checkpoints/best.ckpt"
for ckpt in outputs/multirun/quality_{depth,kernel,rnn_cell,dbilstm}_sweep{,_seed1}/*/checkpoints/best.ckpt "$lab"; do
  $PY -m autoreg.analysis.quality ckpt="$ckpt"   # -> best_quality.json and best_quality.png beside it
done
for ckpt in outputs/multirun/quality_{depth,kernel,rnn_cell,dbilstm}_sweep/*/checkpoints/best.ckpt "$lab"; do
  for seed in 1 2; do   # the sampling spread (report.md's last table)
    $PY -m autoreg.analysis.quality ckpt="$ckpt" seed=$seed out="${ckpt%.ckpt}_quality_seed$seed.json"
  done
done
for study in depth_sweep kernel_sweep rnn_cell_sweep dbilstm_sweep; do
  $PY -m autoreg.analysis.report outputs/multirun/quality_$study --out $OUT/$study
done
$PY experiments/post_lab/quality_table.py > $OUT/table.md
