#!/bin/bash
# The wheels a GPU machine without network needs for scripts/gpu_check.sh, downloaded here into .whl/
# (ignored by git; name .whl in the device call's carry): array-api-compat and array-api-strict for
# the suite, simplejpeg for the host decoding of bench_feed/bench_input, and nvImageCodec with nvJPEG
# for CUDA 13 (decode_on_device, stage feed_gpu). Python 3.12, x86-64, about 30 MB.
#   bash scripts/gpu_wheels.sh            # then: bash scripts/gpu_check.sh tests feed feed_gpu small
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "array-api-compat==${ARRAY_API_COMPAT:-1.16.0}" "array-api-strict==${ARRAY_API_STRICT:-2.6.1}" \
  "simplejpeg==${SIMPLEJPEG:-1.9.0}" "nvidia-nvimgcodec-cu13==${NVIMGCODEC:-0.9.0.20}" \
  "nvidia-nvjpeg==${NVJPEG:-13.3.2.43}"
ls -la .whl
