#!/usr/bin/env bash
# Every GPU check in one run, for a machine with CUDA and the package installed
# (pip install ".[test]"): the CUDA tests, then absolute timings of MATEX,
# Chefer and M2IB on a ViT-B/16 CLIP at 224 px for batch 1, 16 and 64, and
# 8 phrases on one image. Results go to $OUT (default benchmarks/results/speed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/speed}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python -m pytest -q tests/test_cuda.py tests/test_determinism.py tests/test_anatomy.py -k cuda \
    2>&1 | tee "$out/gpu_tests.txt"
PYTHONUNBUFFERED=1 python benchmarks/speed.py --device cuda --sizes vit-b16 --batches 1,16,64 \
    --methods matex,chefer,m2ib --phrases 8 --json "$out/gpu_vitb16.json" | tee "$out/gpu_vitb16.txt"
