#!/usr/bin/env bash
# GPU readiness of keras-sequencer, each Keras backend against timm, in one go
# (about 8 minutes on one GPU):
#   1. benchmarks/gpu_check.py per backend: default/keras/fused logits equal
#      timm's on the GPU; cuDNN's RNN kernel runs; two epochs of fit on all
#      visible GPUs (MirroredStrategy on TensorFlow, DataParallel on JAX).
#   2. benchmarks/throughput.py: inference at batch 256 and a training step at
#      batch 64, AMP (mixed_float16 / torch.autocast), default construction.
# Without a GPU the same checks run on CPU at tiny size (and say so); the
# exit status is 0 when every check passed.
# Usage: benchmarks/gpu_check.sh [python]   (default: python)
set -u
cd "$(dirname "$0")/.."
PYTHON="${1:-python}"
status=0
if "$PYTHON" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  DEVICE=gpu; INFER=(--batch 256 --img-size 224); TRAIN=(--batch 64 --img-size 224); RUNS=(--warmup 3 --repeats 10)
  echo "# GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | paste -sd, -)"
else
  DEVICE=cpu; INFER=(--batch 2 --img-size 32); TRAIN=(--batch 2 --img-size 32); RUNS=(--warmup 0 --repeats 1)
  echo "# no GPU visible: running the checks on CPU at tiny size"
fi
for backend in ${GPU_CHECK_BACKENDS:-jax tensorflow torch}; do
  echo "## checks: $backend"
  KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=3 timeout 300 "$PYTHON" benchmarks/gpu_check.py 2>/tmp/gpu_check_$backend.err \
    || { status=1; echo "FAILED: $backend (stderr tail below)"; tail -5 /tmp/gpu_check_$backend.err; }
done
BACKENDS=$(echo ${GPU_CHECK_BACKENDS:-jax tensorflow torch} | tr ' ' ,)
for mode in infer train; do
  if [ $mode = infer ]; then SIZE=("${INFER[@]}"); else SIZE=("${TRAIN[@]}"); fi
  PRECISION=mixed; [ $DEVICE = cpu ] && PRECISION=fp32
  echo "## throughput: $mode, $PRECISION, $DEVICE"
  timeout 600 "$PYTHON" benchmarks/throughput.py --device $DEVICE --precision $PRECISION --mode $mode \
    --implementation default --backends "$BACKENDS" "${SIZE[@]}" "${RUNS[@]}" || status=1
done
exit $status
