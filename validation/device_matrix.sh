#!/usr/bin/env bash
# One call on the GPU machine (validation/README.md): install the carried Ultralytics wheels, record the
# machine, run the matrix, pack the allocation histories. Run from the repository root with OUT set:
#     LIMIT_S=500 [SET=followup|retake] [RELEASE=] bash validation/device_matrix.sh   (RELEASE= : no 8.3 jobs)
# .whl holds ultralytics 8.4.190 and what it imports that the machine lacks (polars, polars-runtime-32,
# ultralytics-thop, ultralytics-platform); .whl83 holds ultralytics 8.3.253 (the second release's jobs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
if [ -n "${RELEASE-1}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/release .whl83/*.whl || exit 3
fi
export PYTHONPATH="$PWD:/tmp/site" OMP_NUM_THREADS=2 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/ycfg PYTHONUNBUFFERED=1
{
    nvidia-smi
    python3 -c "import torch, ultralytics; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'ultralytics', ultralytics.__version__, torch.cuda.get_device_properties(0))"
    PYTHONPATH="/tmp/release:$PYTHONPATH" python3 -c "import ultralytics; print('release', ultralytics.__version__)"
    python3 -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|numpy|opencv|nvidia-ml|polars|pillow|nvidia-cudnn|nvidia-cublas) "
} >"$OUT/environment.txt" 2>&1
release=()
[ -n "${RELEASE-1}" ] && release=(--release-path /tmp/release)
python3 validation/run_matrix.py --out "$OUT" --set "${SET:-main}" --limit-s "${LIMIT_S:-500}" --history-dir /tmp/hist "${release[@]}"
tar czf "$OUT/histories.tgz" -C /tmp hist
