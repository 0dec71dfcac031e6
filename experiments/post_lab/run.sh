#!/usr/bin/env bash
# Regenerates experiments/post_lab/: the three quick post-lab sweeps (offline MNIST subset, 1200
# steps of batch 32 per job, one CPU thread per job, seeds 0 and 1), their reports, and the
# receptive-field figures. Sweep outputs stay under outputs/post_lab/ (git-ignored); only the
# reports and PNGs land here. Timing: see report.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
OUT=experiments/post_lab

for study in depth_sweep kernel_sweep rnn_cell_sweep; do
  # a failed job makes train.py exit non-zero; the others still run and the report marks it
  $PY train.py -m +experiment=${study}_quick seed=0,1 hydra.sweep.dir=outputs/post_lab/$study
  $PY -m autoreg.analysis.report outputs/post_lab/$study --out $OUT/$study
done

rf() { $PY -m autoreg.analysis.receptive_field "$@"; }
rf model=pixelcnn model.depth=4 model.kernel=3 out=$OUT/receptive_field/pixelcnn_depth4_k3.png
rf model=pixelcnn model.depth=4 model.kernel=3 model.dilation=2 out=$OUT/receptive_field/pixelcnn_depth4_k3_dilation2.png
rf model=pixelcnn model.depth=12 model.kernel=3 out=$OUT/receptive_field/pixelcnn_depth12_k3.png
rf model=pixelrnn model.arch=row_lstm out=$OUT/receptive_field/row_lstm.png
rf model=pixelrnn model.arch=diagonal_bilstm out=$OUT/receptive_field/diagonal_bilstm.png
rf model=gated_pixelcnn out=$OUT/receptive_field/gated_pixelcnn.png   # the default: 4 layers, k = 5
rf model=pixelcnn model.first_kernel=5 model.depth=3 model.kernel=5 out=$OUT/receptive_field/pixelcnn_4layers_k5.png
# trained vs untrained: the seed-0 depth-12 and Diagonal BiLSTM (LSTM) jobs of the sweeps above
rf ckpt="$(ls -d outputs/post_lab/depth_sweep/*model.depth=12,seed=0)/checkpoints/best.ckpt" \
   out=$OUT/receptive_field/pixelcnn_depth12_trained.png
rf ckpt="$(ls -d outputs/post_lab/rnn_cell_sweep/*diagonal_bilstm,model.cell=lstm,seed=0)/checkpoints/best.ckpt" \
   out=$OUT/receptive_field/diagonal_bilstm_trained.png
