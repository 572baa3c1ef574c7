#!/usr/bin/env bash
# bench/run_cpu.sh [LOG]: the CPU benchmark suite in one go (about 10 minutes on 2 cores):
# builds the bench targets if needed, prints the machine, date and commit, then runs
#   1. bench_cpu_ops         every op family at the real shapes, ours vs LibTorch, with the
#                            machine's measured copy bandwidth and sgemm rate;
#   2. bench_cpu_train_step  the whole training step, ours vs LibTorch;
#   3. bench/reference/train_smp.py --bench  the step in PyTorch + smp (eager; the CUDA modes
#                            say that they need a GPU), when a Python with torch and smp exists.
# Everything is also written to LOG (default bench-cpu.log in the build folder).
# Environment: BUILD_DIR (default build), BATCH (16), THREADS (all cores), MIN_TIME (seconds per
# op benchmark, default 0.2), PYTHON (default python3), SMP_MODES (default eager), SMP_STEPS
# (timed PyTorch steps, default 3: a CPU step takes seconds).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
batch=${BATCH:-16}
threads=${THREADS:-$(nproc)}
min_time=${MIN_TIME:-0.2}
python=${PYTHON:-python3}
modes=${SMP_MODES:-eager}
smp_steps=${SMP_STEPS:-3}
log=${1:-$build/bench-cpu.log}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release || exit 1
fi
cmake --build "$build" --target bench_cpu_ops bench_cpu_train_step -j "$(nproc)" || exit 1
mkdir -p "$(dirname "$log")"

status=0
{  # a subshell (it is piped): its exit status is the suite's
  echo "== unetcu CPU benchmarks"
  echo "date    $(date -u +%Y-%m-%dT%H:%MZ)"
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
  dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo " plus uncommitted changes")
  echo "commit  $commit$dirty"
  echo "cpu     $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(lscpu | sed -n 's/^Flags:.*\(avx512f\).*/\1/p;s/^Flags:.*\(avx2\).*/\1/p' | head -1)"
  echo "memory  $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "load    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"
  echo "batch $batch, 128x128, $threads threads, min time $min_time s per op benchmark"
  echo

  echo "== 1. ops (bench_cpu_ops)"
  "$build/bench/bench_cpu_ops" --batch "$batch" --threads "$threads" \
    --benchmark_min_time="$min_time" || status=1
  echo

  echo "== 2. training step (bench_cpu_train_step)"
  "$build/bench/bench_cpu_train_step" --batch "$batch" --threads "$threads" || status=1
  echo

  echo "== 3. PyTorch + smp (bench/reference/train_smp.py --bench)"
  if "$python" -c 'import torch, segmentation_models_pytorch' 2>/dev/null; then
    "$python" "$root/bench/reference/train_smp.py" --bench --device cpu --batch "$batch" \
      --threads "$threads" --modes "$modes" --warmup 1 --steps "$smp_steps" || status=1
  else
    echo "skipped: $python has no torch + segmentation_models_pytorch (set PYTHON=...)"
  fi
  echo
  echo "load    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) after the run"
  exit $status
} 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "log: $log"
exit "$status"
