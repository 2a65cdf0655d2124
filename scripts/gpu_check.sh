#!/bin/bash
# One device-machine call: GPU tests, the test suite on CuPy, the GPU benchmark, a short training run.
# Usage (on the GPU machine, repo root, the wheels of scripts/gpu_wheels.sh in .whl/):
#   bash scripts/gpu_check.sh [tests|suite|bench|bench_tf32|small|feed|feed_gpu|train|profile|retest|convbench ...]
#   (default: tests suite bench train, in that order; small: the --small set on CuPy; feed: AlexNet-227
#   fed from JPEG files through worker processes and pinned memory, against the same step on a
#   batch already on the device; feed_gpu: the same with the JPEGs decoded on the GPU, nvImageCodec's
#   wheels carried in .whl/)
# Logs go to $OUT (or /tmp/gpu_out); each stage has its own time limit so the call ends in time.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
stages=${*:-tests suite bench train}
T_TESTS=${T_TESTS:-90}; T_SUITE=${T_SUITE:-100}; T_BENCH=${T_BENCH:-150}; T_TRAIN=${T_TRAIN:-60}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import cupy, torch, numpy, sys; print('python', sys.version.split()[0], 'cupy', cupy.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
XPNET_BACKEND=cupy python3 -m xpnet info 2>&1 | tail -n 12
for s in $stages; do
  echo "=== $s $(date +%T)"
  case $s in
    tests) timeout $T_TESTS python3 -m pytest -m gpu -q --tb=short -p no:cacheprovider --timeout 60 tests \
             > "$OUT/gpu_tests.log" 2>&1; echo "rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.log" | tail -n 25 ;;
    suite) XPNET_TEST_BACKENDS=cupy timeout $T_SUITE python3 -m pytest -q --tb=short -p no:cacheprovider -n 12 \
             --timeout 90 -m "not gpu" tests > "$OUT/cupy_suite.log" 2>&1; echo "rc=$?"
           grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/cupy_suite.log" | sort | uniq | tail -n 40 ;;
    bench) XPNET_BACKEND=cupy timeout $T_BENCH python3 scripts/bench.py --rounds ${BENCH_ROUNDS:-3} \
             ${BENCH_WORKLOADS:+--workloads $BENCH_WORKLOADS} --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log" | tail -n 12 ;;
    bench_tf32) XPNET_BACKEND=cupy timeout ${T_BENCH_TF32:-60} python3 scripts/bench.py --tf32 --no-memory \
             --rounds ${BENCH_ROUNDS:-3} --workloads ${TF32_WORKLOADS:-vgg16_cifar,alexnet_227} \
             --json "$OUT/bench_gpu_tf32.json" 2>&1 | tee "$OUT/bench_tf32.log" | tail -n 5 ;;
    small) XPNET_BACKEND=cupy timeout ${T_SMALL:-90} python3 scripts/bench.py --small \
             --json "$OUT/bench_small_gpu.json" 2>&1 | tee "$OUT/bench_small.log" | tail -n 8 ;;
    feed) XPNET_BACKEND=cupy timeout ${T_FEED:-150} python3 scripts/bench_feed.py --pin-memory \
             --images ${FEED_IMAGES:-1024} --steps ${FEED_STEPS:-40} ${FEED_ARGS:-} 2>&1 | tee "$OUT/feed.log" | tail -n 6 ;;
    feed_gpu) XPNET_BACKEND=cupy timeout ${T_FEED:-150} python3 scripts/bench_feed.py --decode-on-device \
             --images ${FEED_IMAGES:-1024} --steps ${FEED_STEPS:-40} ${FEED_ARGS:-} 2>&1 | tee "$OUT/feed_gpu.log" | tail -n 6 ;;
    profile) XPNET_BACKEND=cupy timeout ${T_PROFILE:-150} python3 scripts/gpu_profile.py ${PROFILE_ARGS:-} \
             > "$OUT/profile.log" 2>&1; echo "rc=$?"; grep -E "^\[" "$OUT/profile.log" ;;
    retest) XPNET_TEST_BACKENDS=cupy timeout ${T_RETEST:-90} python3 -m pytest -q --tb=short -p no:cacheprovider -n 8 \
             --timeout 60 ${RETEST_PATHS:-tests} > "$OUT/retest.log" 2>&1; echo "rc=$?"
           grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/retest.log" | tail -n 30 ;;
    convbench) XPNET_BACKEND=cupy timeout ${T_CONVBENCH:-90} python3 scripts/gpu_conv_bench.py ${CONVBENCH_ARGS:-} \
             2>&1 | tee "$OUT/convbench.log" ;;
    train) XPNET_BACKEND=cupy timeout $T_TRAIN python3 scripts/train_vgg.py --dataset synthetic --epochs 1 \
             --limit-batches 30 --out /tmp/run_vgg 2>&1 | tail -n 6 ;;
  esac
done
echo "=== done $(date +%T)"
