#!/usr/bin/env bash
# tools/device_check.sh OUTDIR: the whole GPU check on a bare GPU machine, in one call
# (design/gpu-check.md). Run tools/stage_device_deps.sh on a development machine first: the
# build takes stb, doctest, Google Benchmark and OpenBLAS from .device-deps/.
#
#   1. prints what the machine has (GPU, driver, nvcc, cuDNN, PyTorch), so a failed run still
#      says why;
#   2. configures the CUDA build (sm_90, LibTorch from the torch package, cuDNN from the pip
#      package when there is one, the staged dependencies) and builds, with all cores, only what
#      runs on the GPU: unetcu, the native test binaries, bench_cuda_ops and bench_cudnn_fusion
#      (the CPU tests and benchmarks are CI's; building them here would spend the GPU's time);
#   2c. with UNETCU_CHECK_SANITIZE=PATTERN, the native kernel tests PATTERN selects, plain and
#      under compute-sanitizer (memcheck, racecheck, synccheck, initcheck): before a quick A/B,
#      and in the full check after section 3;
#   3. what every run must bring, first, so that a tight budget never cuts it: the native kernel
#      tests (unetcu_cuda_tests, ctest); the CPU-vs-GPU training-step and parity checks
#      (unetcu_backend_cuda_tests, with the memory plan's buffer guards on:
#      UNETCU_BUFFER_GUARDS=1); training on generated data with --device cuda at batch 16,
#      128x128, TF32 (images/s from the last epoch, the first includes cuDNN's algorithm search
#      and the graph captures) and `unetcu predict` from its weights on the CPU and on the GPU
#      with fp32 and with TF32 convolutions, probabilities compared; bench_cuda_ops (every op
#      and the training step, ours vs LibTorch, the memory-bound ops against equal-size device
#      copies) and the step's timeline (5 replayed steps under CUPTI's activity trace,
#      bench_cuda_ops --trace-steps, read by tools/step_timeline.py: how the streams
#      overlapped, where the compute stream waited and under which kernels); the PyTorch
#      reference step (bench/reference/train_smp.py: smp when it imports, else its plain
#      torch.nn replica);
#      Nsight Compute's profile of 3 replayed steps, when ncu is there (each kernel's duration,
#      summed by family: tools/ncu_step_summary.py);
#   4. what has not yet run on a GPU: the side streams' launches chained as before
#      (UNETCU_SIDE_PDL=1: the step and its timeline, against the new default's), then the
#      opt-in settings built but never measured, each checked
#      against the CPU where it changes what the step computes and the step timed with it
#      (UNETCU_MMA_WGRAD_WAVES=4, with its timeline; UNETCU_CUDNN_KNOB_VARIANTS,
#      UNETCU_CUDNN_HEURISTICS_B=1), then the BatchNorm-fusion probe (bench_cudnn_fusion;
#      UNETCU_CHECK_FUSION=0 leaves it out) and Nsight Compute's full sections for the step's
#      first two BatchNorms each way (why they stay below the copy), then for their passes last
#      rows first, then for the Dice forward and counts;
#   5. what earlier runs measured (bench/RESULTS.md), again while the budget lasts: training
#      with --no-tf32, the settings the ninth run timed once (the CPU-vs-GPU steps with cuDNN's
#      knob variants, UNETCU_UPSAMPLE_IN_PLACE=0 and UNETCU_BN_PASS_LAST_FIRST=1, the step
#      with those two and UNETCU_CUDNN_CANDIDATES=32),
#      the CPU-vs-GPU steps under each other opt-in setting and schedule (UNETCU_GEMM_CONV=1,
#      with UNETCU_GEMM_SEARCH=1, UNETCU_CUDNN_WGRAD_SMS=112, UNETCU_PATH_TIMING=1,
#      UNETCU_BN_RELU_MASK_FROM_INPUT=0,
#      UNETCU_STREAM_PRIORITY=0, UNETCU_WGRAD_STREAMS=1, UNETCU_LATE_JOIN=0, the serial schedule,
#      UNETCU_PDL=0), then the step with each (and with UNETCU_DIRECT_CONV=0,
#      UNETCU_GEMM_CONV=0, UNETCU_CUDNN_WGRAD_SMS=96, UNETCU_CUDNN_CANDIDATES=4,
#      UNETCU_EARLY_ADAM=0, UNETCU_CUDNN_GRAPH=0 for the convolutions too, UNETCU_PDL=0 for the
#      reductions and copies too) and the timeline with 112 SMs; the budget
#      cuts the last;
#   6. with UNETCU_NCU_DETAIL=REGEX, Nsight Compute's full sections (speed of light,
#      occupancy, launch, warp states and stall reasons, scheduler, memory workload, source
#      counters: where the sampled stalls sit) for the
#      first UNETCU_NCU_DETAIL_COUNT (default 12) kernels of one replayed step whose names
#      match REGEX, into ncu_detail.log: why a kernel is slow, where durations only say that
#      it is (a one-launch reduction once measured 2-4x slower than its two kernels, for a
#      reason durations could not show);
#   7. prints a short table last, with the GPU ops' per-family ratios, the memory-bound table
#      and the cuDNN algorithm of every convolution of the TF32 training run. Full logs go to
#      OUTDIR.
# A failing phase is recorded and the next phases still run; each phase has a time limit, cut
# to what is left of the whole budget, so the table always gets printed; the phases the spent
# budget kept from running are named in one "not run" row. Environment knobs:
# UNETCU_DEVICE_BUILD (build folder, default build-device), UNETCU_DEPS (default .device-deps),
# UNETCU_CHECK_BUDGET (seconds for everything, default 540), UNETCU_TORCH_MODES (the PyTorch
# step's modes, default eager,cuda_graph), UNETCU_NCU_DETAIL,
# UNETCU_NCU_DETAIL_COUNT and UNETCU_NCU_DETAIL_SETTING (6, also after 2b's A/B; off by
# default), UNETCU_CHECK_AB and UNETCU_CHECK_AB_ROUNDS (2b:
# after the build, only the step under each of a few settings in turn, with
# UNETCU_CHECK_AB_VERIFY=1 the CPU-vs-GPU steps first (and under each setting of
# UNETCU_CHECK_AB_VERIFY_SETTINGS="SETTING;..."), with UNETCU_CHECK_AB_OPS=REGEX the
# bench_cuda_ops pairs REGEX matches, each checked against the CPU reference, before the
# rounds, with UNETCU_CHECK_AB_TIMELINE=1 each setting's step timeline after them; off by
# default),
# UNETCU_CHECK_FUSION (=0: no BatchNorm-fusion probe in section 4; =1: the probe before a quick
# A/B too),
# UNETCU_CHECK_SANITIZE=PATTERN (2c: the native kernel tests PATTERN matches, plain and under
# compute-sanitizer's memcheck, racecheck, synccheck and initcheck; off by default;
# UNETCU_CHECK_RACECHECK=PATTERN narrows racecheck's; UNETCU_CHECK_SANITIZE_TOOLS="racecheck"
# runs only the tools it names), UNETCU_CHECK_PACK=1 (OUTDIR ends as
# summary.txt and logs.tar.gz, every other log packed, weights and generated data left out,
# long logs cut; also when the check is stopped).
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: tools/device_check.sh OUTDIR" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
build=${UNETCU_DEVICE_BUILD:-$root/build-device}
deps=${UNETCU_DEPS:-$root/.device-deps}
jobs=$(nproc)
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
multiarch=${multiarch:-x86_64-linux-gnu}
started=$(date +%s)
budget=${UNETCU_CHECK_BUDGET:-540}
# Eager and CUDA-graph replay, the fair peer of our captured step; channels_last_bf16 and compile
# (about 40 s to compile) measured slower than the graph replay on an H200 (bench/RESULTS.md) and
# are there to name.
torch_modes=${UNETCU_TORCH_MODES:-eager,cuda_graph}
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

# The tree this check ran: HEAD, and how many tracked files differ from it. A copied working
# tree can carry a .git whose HEAD is older than its files; the count says so, and the id of
# the files themselves (every file git does not ignore, written to a scratch index) names the
# tree exactly: the commit whose `git log --format='%h %T'` shows it is the one measured.
tree_id() {
  local head changed index tree
  head=$(git -C "$root" rev-parse --short=12 HEAD 2> /dev/null) || { echo "no git"; return; }
  changed=$(git -C "$root" status --porcelain --untracked-files=no 2> /dev/null | wc -l)
  index=$(mktemp -u)
  tree=$(GIT_INDEX_FILE=$index git -C "$root" add -A 2> /dev/null &&
    GIT_INDEX_FILE=$index git -C "$root" write-tree 2> /dev/null)
  rm -f "$index"
  [ "$changed" -eq 0 ] || head="$head + $changed changed files"
  echo "$head${tree:+, tree ${tree:0:12}}"
}

rows=()
row() { rows+=("$(printf '%-26s %-8s %s' "$1" "$2" "$3")"); }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
# run NAME TIMEOUT_S CMD...: runs CMD with its output in OUTDIR/NAME.log; returns its status
# (124 when it ran out of time). The limit is cut to what is left of the budget.
run() {
  local name=$1 limit=$2 left
  shift 2
  left=$(( budget - ($(date +%s) - started) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "not run: the check's time budget is spent" > "$out/$name.log"
    return 124
  fi
  # In the background and waited for, so that a TERM to the check (on_stop) is taken at once,
  # not when the phase ends.
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1 &
  running=$!
  wait "$running"
  run_status=$?
  running=
  return "$run_status"
}
run_status=0

# The row LABEL of phase NAME, which did not succeed: FAILED with DETAIL, or "out of time" when
# its limit (or the budget) stopped it; a phase the spent budget kept from running joins the
# one "not run" row instead (print_table), so that a tight budget does not bury the rows that
# ran under a row per phase it cut. Call it right after the phase's `run`.
budget_cut=()
not_ok() {
  local name=$1 label=$2 detail=$3
  if [ ! -f "$out/$name.log" ]; then
    row "$label" FAILED "$detail"
  elif grep -q '^not run: ' "$out/$name.log"; then
    budget_cut+=("$label")
  elif [ "$run_status" -eq 124 ] || [ "$run_status" -eq 137 ]; then
    row "$label" FAILED "out of time (its limit, or what was left of the budget); $detail"
  else
    row "$label" FAILED "$detail"
  fi
}

# The first failure a doctest log reports ("file:line: ERROR: CHECK( ... ) is NOT correct!" or
# a crash), shortened for a row; "no failed check in the log" when there is none.
first_failure() {
  local line
  line=$(grep -m1 -E '(ERROR|FATAL ERROR): ' "$1" 2> /dev/null | sed -E 's|^.*/||' | cut -c1-100)
  echo "${line:-no failed check in the log}"
}

# With UNETCU_CHECK_PACK=1 OUTDIR ends holding summary.txt and logs.tar.gz (every other log
# packed in it): for a caller that takes back only a few files, where one per phase would leave
# most of them behind. A check stopped by TERM or INT (an outer timeout) prints its table so far
# and packs too. The archive holds what a reader needs and stays small and quick to make: files
# up to pack_whole bytes whole; longer text (logs, tables) as its first and last pack_cut bytes;
# the generated data (synth-data/) and other large files (the training runs' weights and
# checkpoints, ~100 MB each) left out, named in pack_left_out.txt. Packing them all once took
# longer than the caller's limit left (the check stopped mid-pack, nothing packed) and made an
# archive too large to come back (bench/RESULTS.md, ninth H100 run).
pack_whole=$((4 << 20))
pack_cut=$((1 << 20))
pack_logs() {
  [ "${UNETCU_CHECK_PACK:-0}" = 1 ] || return 0
  # Quick now, and not to be cut: a TERM to the process group (an outer timeout) is ignored
  # here and by tar, which inherits that.
  trap '' TERM INT
  local stage tmp f rel size kept=0 cut=0 left=0
  stage=$(mktemp -d "${TMPDIR:-/tmp}/unetcu-pack.XXXXXX") || return 0
  tmp=$stage.tar.gz
  while IFS= read -r -d '' f; do
    rel=${f#"$out"/}
    size=$(stat -c %s "$f")
    if [[ $rel == synth-data/* ]]; then
      left=$((left + 1))
      echo "$rel $size (generated data)" >> "$stage/pack_left_out.txt"
    elif [ "$size" -le "$pack_whole" ]; then
      kept=$((kept + 1))
      mkdir -p "$(dirname "$stage/$rel")" && cp "$f" "$stage/$rel"
    elif [[ $rel =~ \.(log|txt|csv|json|jsonl)$ ]]; then
      cut=$((cut + 1))
      mkdir -p "$(dirname "$stage/$rel")"
      { head -c "$pack_cut" "$f"
        printf '\n[... %s bytes of %s cut by the pack ...]\n' "$((size - 2 * pack_cut))" "$size"
        tail -c "$pack_cut" "$f"; } > "$stage/$rel"
    else
      left=$((left + 1))
      echo "$rel $size" >> "$stage/pack_left_out.txt"
    fi
  done < <(find "$out" -type f ! -path "$out/summary.txt" ! -path "$out/logs.tar.gz" -print0)
  if tar czf "$tmp" -C "$stage" .; then
    find "$out" -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name logs.tar.gz -exec rm -rf {} +
    chmod 644 "$tmp" && mv "$tmp" "$out/logs.tar.gz"
    [ -f "$out/summary.txt" ] &&
      echo "logs.tar.gz: $kept files whole, $cut cut to their first and last" \
        "$((pack_cut >> 20)) MiB, $left left out (pack_left_out.txt)," \
        "$(stat -c %s "$out/logs.tar.gz") bytes" \
        >> "$out/summary.txt"
  fi
  rm -rf "$stage" "$tmp"
}
running=
on_stop() {
  trap - TERM INT
  # The phase running: its timeout passes the signal on to the command.
  if [ -n "$running" ]; then
    kill -TERM "$running" 2> /dev/null
    wait "$running" 2> /dev/null
  fi
  row "stopped" "" "by a signal after $(elapsed "$started"); the rows above are what ran"
  if declare -F print_table > /dev/null; then print_table; else printf '%s\n' "${rows[@]}"; fi
  exit 143
}
trap pack_logs EXIT
trap on_stop TERM INT

# ---- 1. the machine ---------------------------------------------------------------------------
{
  echo "== GPU"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
    echo "nvidia-smi failed: no usable GPU or driver"
  echo "== nvcc"
  nvcc --version 2>&1 | tail -2 || echo "nvcc not found"
  echo "== python / torch"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1 ||
    echo "torch not importable"
  echo "== cuDNN"
  python3 -c 'import nvidia.cudnn as m; print("pip package:", list(m.__path__)[0])' 2>/dev/null ||
    echo "pip package: none"
  for h in /usr/local/cuda/include/cudnn_version.h /usr/include/cudnn_version.h \
           /usr/include/x86_64-linux-gnu/cudnn_version.h; do
    [ -e "$h" ] && echo "system: $h $(grep -E '#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$h" |
      awk '{printf "%s%s", sep, $3; sep="."}')"
  done
  echo "== cores: $jobs"
} 2>&1 | tee "$out/machine.txt"

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
row "GPU, driver" "$([ -n "$gpu" ] && echo ok || echo MISSING)" "${gpu:-no nvidia-smi}"
row "nvcc" "" "$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo none)"

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
py_cudnn=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)
# One cuDNN in every process: the one the torch package loads, when there is one.
cudnn_args=()
if [ -n "$py_cudnn" ]; then
  cudnn_args=(-DUNETCU_CUDNN_ROOT="$py_cudnn" -DUNETCU_PY_CUDNN="$py_cudnn")
fi
export LD_LIBRARY_PATH="$deps/lib:$deps/lib/$multiarch${py_cudnn:+:$py_cudnn/lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$deps" ] || echo "warning: $deps is missing: run tools/stage_device_deps.sh first" >&2

# ---- 2. configure and build -------------------------------------------------------------------
t=$(date +%s)
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
if run configure 180 cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
     -DUNETCU_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DUNETCU_ASAN=OFF \
     -DUNETCU_DEPS_DIR="$deps" ${torch_prefix:+-DCMAKE_PREFIX_PATH="$torch_prefix"} \
     "${cudnn_args[@]}"; then
  cudnn_found=$(grep -E 'cuDNN +:' "$out/configure.log" | sed 's/.*: *//')
  row "configure" ok "$(elapsed "$t"); cuDNN ${cudnn_found:-?}"
else
  row "configure" FAILED "$(elapsed "$t"); see configure.log"
fi
grep -A12 'unetcu configuration' "$out/configure.log" || true

t=$(date +%s)
if run build 420 cmake --build "$build" -j "$jobs" --target unetcu unetcu_cuda_tests \
     unetcu_backend_cuda_tests; then
  row "build" ok "$(elapsed "$t") on $jobs cores"
else
  row "build" FAILED "$(elapsed "$t"); see build.log: $(grep -m1 -E 'error|FAILED' "$out/build.log" | cut -c1-80)"
fi
# The GPU benchmark exists only where Google Benchmark was found: a missing target is no failure.
if ! grep -q 'bench_cuda_ops' "$out/configure.log"; then
  row "build bench_cuda_ops" skipped "not configured (Google Benchmark or the CUDA backend missing)"
elif run build_bench 240 cmake --build "$build" -j "$jobs" --target bench_cuda_ops \
       bench_cudnn_fusion; then
  row "build bench_cuda_ops" ok "$(elapsed "$t") since the build began"
else
  row "build bench_cuda_ops" FAILED "see build_bench.log"
fi

gpu_bench=$build/bench/bench_cuda_ops
# bench_cuda_ops again with an environment SETTING (VAR=value words) for the pairs FILTER selects,
# into NAME.log; the row LABEL says what SUMMARY (a function of the log) finds. Here, in the
# timelines and in Nsight Compute's sections the step is not tuned (UNETCU_TUNE_STEP=0, unless
# SETTING says otherwise), so that each measures the schedule its settings name; the default
# run's "step tuning" row says what the tuning timed and kept.
bench_variant() {
  local name=$1 label=$2 setting=$3 filter=$4 summary=$5 t
  t=$(date +%s)
  # shellcheck disable=SC2086  # SETTING may hold several VAR=value words
  if run "$name" 120 env UNETCU_TUNE_STEP=0 $setting "$gpu_bench" --runs 30 \
       --benchmark_filter="$filter" &&
     ! grep -q '^SKIPPED' "$out/$name.log"; then
    row "$label" ok "$(elapsed "$t"); $("$summary" "$out/$name.log")"
  elif grep -q '^SKIPPED' "$out/$name.log"; then
    row "$label" skipped "$(grep -m1 '^SKIPPED' "$out/$name.log")"
  else
    not_ok "$name" "$label" "$(elapsed "$t"); see $name.log"
  fi
}
step_summary() {
  local step
  step=$(grep -E '^training step:' "$1" | sed 's/^training step: //')
  echo "step: ${step:-none}"
}
# The step's CUPTI timeline under SETTING (may be empty) into NAME.csv, read into TEXT (a file
# name in the log folder); the row gives its figures: timeline_row NAME TEXT LABEL SETTING.
timeline_row() {
  local name=$1 text=$out/$2 label=$3 setting=$4 t figures
  t=$(date +%s)
  # shellcheck disable=SC2086  # SETTING may hold several VAR=value words
  if ! run "$name" 90 env UNETCU_TUNE_STEP=0 $setting "$gpu_bench" --trace-steps 5 \
       --trace-out "$out/$name.csv"; then
    not_ok "$name" "$label" "$(elapsed "$t"); see $name.log"
  elif python3 "$root/tools/step_timeline.py" "$out/$name.csv" > "$text" 2>&1; then
    figures=$(grep -E '^(span|busy|compute busy|compute gaps, GPU idle|compute gaps, other lanes only|tail after compute|from compute start) ' \
      "$text" | sed -E 's/ {2,}/ /g' | paste -sd';' - | sed 's/;/; /g')
    row "$label" ok "$(elapsed "$t"); ms, share of the step: $figures"
  else
    row "$label" FAILED "$(elapsed "$t"); see $name.log, $text"
  fi
}
# Whether bench_cuda_ops can run its variants: built, and its default run (when there was one)
# found a GPU.
bench_runs() {
  [ -x "$gpu_bench" ] && ! grep -q '^SKIPPED' "$out/bench_cuda_ops.log" 2> /dev/null
}
# The training step alone under SETTING: step_bench NAME LABEL SETTING.
step_bench() { bench_variant "$1" "$2" "$3" '^train_step' step_summary; }
variant_summary() {
  local below
  below=$(grep -E 'families below 70% of the copy' "$1")
  echo "$(step_summary "$1"); memory-bound: ${below:-no table}"
}
# How many of the step's convolutions a graph-API plan marked MARK serves in LOG:
# serving MARK LOG ("knob variant", "heuristics B").
serving() { grep -oE "$(marked_plan "$1")" "$2" | wc -l; }
# With path timing on (UNETCU_PATH_TIMING=1), how many of our kernels' op shapes kept each
# path in LOG (kernels/path_timing.h's report lines: "OP SHAPE: PATH (...)"):
# kept_paths LOG -> "2 row_sweep", or "none timed".
kept_paths() {
  local kept line
  line='^conv[a-z_.]* [0-9x]+: [a-z0-9_]+'
  kept=$(grep -oE "$line" "$1" | awk '{print $3}' | sort | uniq -c |
    awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
  echo "${kept:-none timed}"
}
# The step, and how many plans of each opt-in kind serve in it.
serving_summary() {
  echo "$(step_summary "$1"); serving: $(serving "knob variant" "$1") knob variants," \
    "$(serving "heuristics B" "$1") of mode B, $(serving " SMs" "$1") carved out;" \
    "paths kept: $(kept_paths "$1")"
}
# Pairs that were skipped because they disagreed with the reference or failed, and the
# memory-bound families below target, of an ops run.
ops_summary() {
  local skipped below
  skipped=$(grep -c -E 'disagrees with the reference|failed: ' "$1")
  below=$(grep -E 'families below 70% of the copy' "$1")
  echo "$skipped pairs disagree or fail; memory-bound: ${below:-no table}"
}
nograph_summary() {
  local conv
  conv=$(sed -n '/^per family/,/^all /p' "$1" | awk '/^conv/ {printf "%s%s %s", sep, $1, $2; sep=", "}')
  echo "ours ms: ${conv:-none}; $(step_summary "$1")"
}

# The table (section 7), also the end of a quick A/B (2b).
print_table() {
  {
    echo
    echo "unetcu device check ($(tree_id), $(date -u +%Y-%m-%dT%H:%MZ), $(elapsed "$started") total; logs in $out)"
    printf '%s\n' "${rows[@]}"
    if [ "${#budget_cut[@]}" -gt 0 ]; then
      printf '%-26s %-8s %s\n' "not run" "" "the budget spent before ${#budget_cut[@]}:\
 $(printf '%s; ' "${budget_cut[@]}" | sed 's/; $//')"
    fi
    if [ -f "$out/bench_cuda_ops.log" ]; then
      echo
      sed -n '/^per family/,/^all /p' "$out/bench_cuda_ops.log"
      echo
      sed -n '/^memory-bound ops/,/families below/p' "$out/bench_cuda_ops.log"
      echo
      sed -n '/^the host.s time to issue one run/,/timed unheld$/p' "$out/bench_cuda_ops.log"
    fi
    if [ -s "$out/fusion_probe.log" ]; then
      echo
      cat "$out/fusion_probe.log"
    fi
    if [ -s "$out/step_timeline.txt" ]; then
      echo
      cat "$out/step_timeline.txt"
    fi
    if [ -s "$out/ncu_summary.txt" ]; then
      echo
      cat "$out/ncu_summary.txt"
    fi
    if [ -s "$out/ncu_sections.txt" ]; then
      echo
      cat "$out/ncu_sections.txt"
    fi
    # Where the convolution time goes: cuDNN's choice per shape (and the runner-up timings).
    if [ -f "$out/train-tf32/algorithms.txt" ]; then
      echo
      echo "cuDNN algorithms of the tf32 training run (train-tf32/algorithms.txt):"
      cat "$out/train-tf32/algorithms.txt"
    fi
  } | tee "$out/summary.txt"
}

# The CPU-vs-GPU training-step and parity checks (unetcu_backend_cuda_tests), their row and
# the gradient errors; when they fail, the same without cuDNN's graph API, to tell whether it
# is that path (section 3, and 2b with UNETCU_CHECK_AB_VERIFY=1).
step_bin=$build/tests/backend/unetcu_backend_cuda_tests
# "gradient rel L2 per step: E1, E2, E3", read from the steps' LOG.
step_grads() {
  local grads
  grads=$(grep -o 'step [0-9] gradients: relative L2 [0-9.e+-]*' "$1" |
    awk '{printf "%s%s", sep, $NF; sep=", "}')
  echo "gradient rel L2 per step: ${grads:-?}"
}
step_check_rows() {
  local t served
  t=$(date +%s)
  # With the memory plan's buffer guards (checked when a test reads the state or gradients):
  # a kernel, ours or a library's, that writes past its output fails the check natively too.
  if [ -x "$step_bin" ] && run step_check 240 env UNETCU_BUFFER_GUARDS=1 "$step_bin" -s; then
    if grep -q '^SKIPPED' "$out/step_check.log"; then
      row "cpu-vs-gpu step" skipped "$(head -1 "$out/step_check.log")"
    else
      # Whether the steps ran our convolution kernels at all: they serve only where timed
      # faster than cuDNN, at these small shapes perhaps nowhere.
      served=$(serving_shapes "$any_rival" "$out/step_check.log")
      row "cpu-vs-gpu step" ok \
        "$(elapsed "$t"); $(step_grads "$out/step_check.log"); shapes our kernels serve: $served"
    fi
  else
    not_ok step_check "cpu-vs-gpu step" \
      "$(elapsed "$t"); $(first_failure "$out/step_check.log"); see step_check.log"
    [ -x "$step_bin" ] && ! grep -q '^not run: ' "$out/step_check.log" || return 0
    # Is it cuDNN's graph-API path? The same tests with the descriptor API alone say.
    t=$(date +%s)
    if run step_check_nograph 240 env UNETCU_CUDNN_GRAPH=0 "$step_bin" -s; then
      row "cpu-vs-gpu step, graph API off" ok "$(elapsed "$t"); see step_check_nograph.log"
    else
      not_ok step_check_nograph "cpu-vs-gpu step, graph API off" "$(elapsed "$t");\
 $(first_failure "$out/step_check_nograph.log"); see step_check_nograph.log"
    fi
  fi
}

# How many lines of LOG's algorithm report (a shape and direction each) match the extended
# regex SERVES, each line once (the test binary may print its report more than once).
serving_shapes() { grep -E "$1" "$2" | sort -u | wc -l; }
# A graph-API plan marked MARK serving, and one of our kernels serving (a rival of cuDNN's
# choice), as serving_shapes patterns.
marked_plan() { echo "runs graph engine [0-9]+ \[[^]]*$1[^]]*\]"; }
any_rival='rival [^;]*SERVES'
# The same steps (parity aside) again with an environment SETTING (VAR=value words), into NAME.log,
# as row LABEL; only when the plain steps ran on a GPU. They check schedules and kernels, not
# cuDNN's choice, so they time only its top 4 graph-API configurations (less start-up time);
# with the buffer guards, as the plain steps. With SERVES and NOUN (a serving_shapes pattern
# for what the setting changes, what to call it), the row also says at how many shapes (and
# directions) it served: where it served at none, the steps checked nothing of it.
step_variant() {
  local name=$1 label=$2 setting=$3 serves=${4:-} noun=${5:-} t served=
  [ -x "$step_bin" ] && ! grep -q '^SKIPPED' "$out/step_check.log" || return 0
  t=$(date +%s)
  # shellcheck disable=SC2086  # SETTING may hold several VAR=value words
  if run "$name" 120 env UNETCU_CUDNN_CANDIDATES=4 UNETCU_BUFFER_GUARDS=1 $setting \
       "$step_bin" -s '-tce=*PyTorch*smp*'; then
    [ -z "$serves" ] ||
      served="; shapes $noun serves: $(serving_shapes "$serves" "$out/$name.log")"
    row "$label" ok "$(elapsed "$t"); $(step_grads "$out/$name.log")$served"
  else
    not_ok "$name" "$label" "$(elapsed "$t"); $(first_failure "$out/$name.log"); see $name.log"
  fi
}

# Nsight Compute's full sections for the kernels matching UNETCU_NCU_DETAIL (6; also after
# the quick A/B of 2b), with the environment SETTING in UNETCU_NCU_DETAIL_SETTING (VAR=value
# words; none by default), e.g. an opt-in path's kernels. Every section replays each kernel
# several times (about 40 passes), so only a few kernels.
ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | tail -1)
# ncu_detail NAME LABEL REGEX COUNT BASE SETTING: Nsight Compute's full sections for the first
# COUNT kernels of one replayed step whose names (BASE: ncu's --kernel-name-base, function or
# demangled, which holds the template arguments) match REGEX, under SETTING, into NAME.log.
ncu_detail() {
  local name=$1 label=$2 regex=$3 count=$4 base=$5 setting=$6 t kernels
  if [ -z "$gpu" ] || [ ! -x "$gpu_bench" ] || [ -z "$ncu_bin" ]; then
    row "$label" skipped "needs a GPU, bench_cuda_ops and ncu"
    return 0
  fi
  t=$(date +%s)
  # shellcheck disable=SC2086  # the setting may hold several VAR=value words
  if run "$name" 120 env UNETCU_TUNE_STEP=0 $setting "$ncu_bin" --profile-from-start off \
       --kernel-name-base "$base" -k "regex:$regex" \
       -c "$count" --section SpeedOfLight --section Occupancy \
       --section LaunchStats --section WarpStateStats --section SchedulerStats \
       --section MemoryWorkloadAnalysis --section SourceCounters --cache-control none \
       --clock-control none \
       "$gpu_bench" --profile-steps 1; then
    kernels=$(grep -c -E '^  [^ ].*\(([0-9]+, ){2}[0-9]+\)x\(' "$out/$name.log")
    row "$label" ok "$(elapsed "$t"); $kernels kernels matching '$regex' in $name.log${setting:+\
 (with $setting)}"
    # A line a kernel for the summary (the log is hundreds of lines a kernel, and may not come
    # back): duration, DRAM rate, hit rates, occupancy, the costliest stall.
    {
      echo "Nsight Compute sections, $name.log${setting:+ (with $setting)}:"
      python3 "$root/tools/ncu_sections_summary.py" "$out/$name.log" 2>&1
      echo
    } >> "$out/ncu_sections.txt"
  else
    not_ok "$name" "$label" "$(elapsed "$t"); see $name.log"
  fi
}
# With UNETCU_NCU_DETAIL=REGEX (section 6, and after a quick A/B).
ncu_detail_rows() {
  [ -n "${UNETCU_NCU_DETAIL:-}" ] || return 0
  ncu_detail ncu_detail "kernel details (ncu)" "$UNETCU_NCU_DETAIL" \
    "${UNETCU_NCU_DETAIL_COUNT:-12}" function "${UNETCU_NCU_DETAIL_SETTING:-}"
}

# ---- the BatchNorm-fusion probe --------------------------------------------------------------
# bench_cudnn_fusion (kernels/cudnn/fusion_probe.h) at its default shapes: whether cuDNN fuses the
# BatchNorm's sums into the convolutions in float32, what builds, how fast, and whether the
# outputs agree. Its lines are printed with the table. Runtime-compiled engines take seconds each
# to build, so it has its own limit (LIMIT seconds) and builds one configuration per heuristics
# mode (UNETCU_CHECK_FUSION_CONFIGS, default 1); the lines finished by then are kept. In the full
# check it runs among what has not yet run on a GPU (UNETCU_CHECK_FUSION=0 leaves it out); before
# a quick A/B only with UNETCU_CHECK_FUSION=1.
fusion_probe_row() {
  local limit=$1 t probe_bin=$build/bench/bench_cudnn_fusion
  t=$(date +%s)
  if [ ! -x "$probe_bin" ]; then
    row "BatchNorm-fusion probe" skipped "bench_cudnn_fusion not built"
  elif run fusion_probe "$limit" "$probe_bin" --configs "${UNETCU_CHECK_FUSION_CONFIGS:-1}"; then
    row "BatchNorm-fusion probe" ok "$(elapsed "$t"); $(grep -c 'outputs agree' \
      "$out/fusion_probe.log") variants ran and agree, $(grep -c 'DISAGREE' \
      "$out/fusion_probe.log") disagree, $(grep -c -E 'none ran|graph refused' \
      "$out/fusion_probe.log") did not run"
  else
    not_ok fusion_probe "BatchNorm-fusion probe" "$(elapsed "$t"); see fusion_probe.log"
  fi
}
if [ -n "${UNETCU_CHECK_AB:-}" ] && [ "${UNETCU_CHECK_FUSION:-0}" = 1 ]; then
  fusion_probe_row 150
fi

# ---- 2c. new kernels under compute-sanitizer (opt-in) -----------------------------------------
# UNETCU_CHECK_SANITIZE=PATTERN: the native kernel tests whose cases PATTERN matches (doctest's
# -tc, e.g. '*tensor-core*'), first as they are, then under each of compute-sanitizer's tools:
# memcheck (out-of-bounds and misaligned accesses, global and shared memory), racecheck
# (shared-memory hazards between a block's threads without a barrier between), synccheck
# (barriers and warp collectives used wrongly) and initcheck (reads of device memory nothing
# wrote). What the SIMT emulator cannot see on a GPU, checked for the kernels that have not yet
# run on one; before an A/B (2b), or in the full check after what every run must bring
# (section 3: a slow tool must not cut that). Where the machine's runtime refuses the
# tool ("Device not supported"), its rows say skipped. Each tool has 150 s; racecheck is by far
# the slowest (on an H100 the BatchNorm cluster tests, since removed, alone outlasted it), so
# UNETCU_CHECK_RACECHECK=PATTERN gives it a narrower pattern of its own.
kernel_bin=$build/tests/emu/unetcu_cuda_tests
sanitizer_bin=$(command -v compute-sanitizer ||
  ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
    2> /dev/null | head -1)
# doctest's totals in LOG: "cases N passed, assertions M passed".
doctest_totals() {
  local cases asserts
  cases=$(grep -oE 'test cases: +[0-9]+ \| +[0-9]+ passed' "$1" | grep -oE '[0-9]+ passed')
  asserts=$(grep -oE 'assertions: +[0-9]+ \| +[0-9]+ passed' "$1" | grep -oE '[0-9]+ passed')
  echo "cases ${cases:-?}, assertions ${asserts:-?}"
}
sanitize_pattern=${UNETCU_CHECK_SANITIZE:-}
sanitizer_rows() {
  local t tool pattern label status log first
  [ -n "$sanitize_pattern" ] || return 0
  t=$(date +%s)
  if [ -x "$kernel_bin" ] && run kernel_tests_native 120 "$kernel_bin" -tc="$sanitize_pattern" &&
     ! grep -q '^SKIPPED' "$out/kernel_tests_native.log"; then
    row "kernel tests $sanitize_pattern" ok "$(elapsed "$t"); $(doctest_totals \
      "$out/kernel_tests_native.log")"
  else
    not_ok kernel_tests_native "kernel tests $sanitize_pattern" "$(elapsed "$t");\
 $(first_failure "$out/kernel_tests_native.log"); see kernel_tests_native.log"
  fi
  # shellcheck disable=SC2086  # the tools are words
  for tool in ${UNETCU_CHECK_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
    t=$(date +%s)
    if [ -z "$sanitizer_bin" ] || [ ! -x "$kernel_bin" ]; then
      row "compute-sanitizer $tool" skipped "needs compute-sanitizer and unetcu_cuda_tests"
      continue
    fi
    pattern=$sanitize_pattern
    [ "$tool" = racecheck ] && pattern=${UNETCU_CHECK_RACECHECK:-$sanitize_pattern}
    label="compute-sanitizer $tool"
    [ "$pattern" = "$sanitize_pattern" ] || label="$label $pattern"
    run "sanitize_$tool" 150 "$sanitizer_bin" --tool "$tool" --error-exitcode 9 \
      --print-limit 20 "$kernel_bin" -tc="$pattern"
    status=$?
    # A test process the tool started can outlive the tool's timeout and hold the card: the
    # next tool must not find it there.
    pkill -KILL -f -- "$kernel_bin" 2> /dev/null || true
    log=$out/sanitize_$tool.log
    # The first of the tool's lines after its banner: the first error, or why it stopped.
    first=$(grep -E '^========= +[A-Za-z]' "$log" | grep -v -m1 'COMPUTE-SANITIZER' |
      sed 's/^========= *//' | cut -c1-90)
    if [ "$status" -eq 0 ]; then
      row "$label" ok "$(elapsed "$t"); $(grep -m1 -E '(ERROR|RACECHECK) SUMMARY' "$log" |
        sed 's/^========= //')"
    elif grep -q '^not run: ' "$log"; then
      budget_cut+=("$label")
    elif grep -q 'Device not supported' "$log"; then
      row "$label" skipped "the runtime refuses it; see sanitize_$tool.log"
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
      row "$label" FAILED "$(elapsed "$t"): out of time (a narrower pattern: UNETCU_CHECK_SANITIZE,\
 UNETCU_CHECK_RACECHECK); ${first:-nothing reported}; see sanitize_$tool.log"
    else
      row "$label" FAILED \
        "$(elapsed "$t"), exit $status; ${first:-no report}; see sanitize_$tool.log"
    fi
  done
}
# Before a quick A/B (2b); in the full check after what every run must bring (section 3).
[ -n "${UNETCU_CHECK_AB:-}" ] && sanitizer_rows

# ---- 2b. a quick A/B of the step (opt-in) ----------------------------------------------------
# UNETCU_CHECK_AB="SETTING;SETTING;...": only bench_cuda_ops' training step (ours, without
# LibTorch's) under each SETTING (VAR=value words, or "default") in turn,
# UNETCU_CHECK_AB_ROUNDS rounds (default 2), then the table; the rest of the check is skipped
# (with UNETCU_CHECK_AB_VERIFY=1, the CPU-vs-GPU steps of section 3 run first, then again
# under each of UNETCU_CHECK_AB_VERIFY_SETTINGS="SETTING;..." (for opt-in paths); with
# UNETCU_CHECK_AB_OPS=REGEX, the bench_cuda_ops pairs it matches, each checked against the
# CPU reference before it is timed, into bench_cuda_ops.log, whose tables the table shows: for
# an opt-in kernel path with probe pairs, e.g. '^(bn[.]|bn_relu|bn_add_relu|limits)' for the
# BatchNorms and the copies they are held to; with UNETCU_CHECK_AB_TIMELINE=1, the step's
# timeline under each setting after the rounds). For a change or an opt-in setting measured in
# a few minutes of GPU time; taking the settings in turn spreads the card's drift over them.
if [ -n "${UNETCU_CHECK_AB:-}" ]; then
  if [ "${UNETCU_CHECK_AB_VERIFY:-0}" = 1 ]; then
    step_check_rows
    IFS=';' read -r -a verify_settings <<< "${UNETCU_CHECK_AB_VERIFY_SETTINGS:-}"
    for i in "${!verify_settings[@]}"; do
      step_variant "step_check_ab_$i" "cpu-vs-gpu step, ${verify_settings[$i]}" \
        "${verify_settings[$i]}"
    done
  fi
  if [ -n "${UNETCU_CHECK_AB_OPS:-}" ]; then
    bench_variant bench_cuda_ops "ops ${UNETCU_CHECK_AB_OPS}" "" "$UNETCU_CHECK_AB_OPS" ops_summary
  fi
  IFS=';' read -r -a ab_settings <<< "$UNETCU_CHECK_AB"
  for round in $(seq 1 "${UNETCU_CHECK_AB_ROUNDS:-2}"); do
    for i in "${!ab_settings[@]}"; do
      setting=${ab_settings[$i]}
      [ "$setting" = default ] && setting=""
      bench_variant "ab_${round}_$i" "A/B ${round}: ${ab_settings[$i]}" "$setting" \
        '^train_step.*/ours/' serving_summary
    done
  done
  # With UNETCU_CHECK_AB_TIMELINE=1, the step's timeline under each setting (section 3's
  # timeline: where the compute stream waited, and under which kernels), ~10 s each.
  if [ "${UNETCU_CHECK_AB_TIMELINE:-0}" = 1 ] && bench_runs; then
    for i in "${!ab_settings[@]}"; do
      setting=${ab_settings[$i]}
      [ "$setting" = default ] && setting=""
      timeline_row "step_trace_ab_$i" "step_trace_ab_$i.txt" "timeline: ${ab_settings[$i]}" \
        "$setting"
    done
  fi
  ncu_detail_rows
  print_table
  exit 0
fi

# ---- the phases of the full check -------------------------------------------------------------
# Each a function; section 3 below runs them in the order of what a run must bring first.

# The native CUDA kernel tests (unetcu_cuda_tests: every hand-written kernel against the CPU
# reference on the card) with ctest.
native_kernel_tests() {
  local t summary skipped
  t=$(date +%s)
  if run ctest 240 ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 220 \
       -R '^unetcu_cuda_tests$' && grep -q '100% tests passed' "$out/ctest.log"; then
    summary=$(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)
    skipped=$(grep -c -E '\*\*\*Skipped|Not Run' "$out/ctest.log" || true)
    row "ctest (cuda kernels)" ok "$(elapsed "$t"); ${summary:-no summary}; $skipped skipped"
  else
    summary=$(grep -E 'tests passed|tests failed' "$out/ctest.log" 2> /dev/null | tail -1)
    not_ok ctest "ctest (cuda kernels)" "$(elapsed "$t"); ${summary:-no summary};\
 $(first_failure "$out/ctest.log"); see ctest.log"
  fi
}

# Training on generated data with --device cuda at batch 16, 128x128 (TF32 on, then off), images/s
# from the last epoch (the first includes cuDNN's algorithm search and the graph captures); where
# the direct kernels served; then `unetcu predict` from its weights on 8 images, on the GPU and
# the CPU, probabilities compared.
unetcu=$build/unetcu
# Three epochs of training in MODE (tf32, or fp32: --no-tf32) on the generated data, its row;
# when it fails, again without cuDNN's graph API (a figure still, and whether that path is the
# cause).
# jsonl_number WHICH FILE KEY: KEY's number in the first (WHICH head) or last (tail) line of a
# run folder's metrics.jsonl.
jsonl_number() {
  "$1" -1 "$2" 2> /dev/null | grep -o "\"$3\": *[0-9.e+-]*" | sed 's/.*: *//'
}
# train_run NAME RUN_DIR [VAR=value...]: three epochs on the generated data at batch 16,
# 128x128, with train_mode's flags (its `extra`), into a fresh RUN_DIR, under the settings given.
train_run() {
  local name=$1 run_dir=$2
  shift 2
  rm -rf "$run_dir"
  run "$name" 240 env "$@" "$unetcu" train "$out/synth-data" --device cuda --batch-size 16 \
    --image-size 128 --epochs 3 --val-frac 0.03 --test-frac 0.03 --out "$run_dir" "${extra[@]}"
}
train_mode() {
  local mode=$1 t extra run_dir ips loss first
  t=$(date +%s)
  extra=()
  [ "$mode" = fp32 ] && extra=(--no-tf32)
  run_dir=$out/train-$mode
  if train_run "train-$mode" "$run_dir"; then
    ips=$(jsonl_number tail "$run_dir/metrics.jsonl" images_per_sec)
    loss=$(jsonl_number tail "$run_dir/metrics.jsonl" train_loss)
    # The first epoch holds cuDNN's algorithm search and the graph captures: their cost.
    first=$(jsonl_number head "$run_dir/metrics.jsonl" epoch_seconds)
    row "train b16 128px $mode" ok "$(printf '%.0f' "${ips:-0}") images/s (epoch 3), train loss ${loss:-?}, epoch 1 took ${first:-?} s"
    # The run's page: its gallery is predicted again on the card after the test. A page that
    # could not be made costs the run only a warning, so the check looks for it.
    if [ -f "$run_dir/report.html" ]; then
      row "train report.html $mode" ok \
        "$(grep -o '<img ' "$run_dir/report.html" | wc -l) test images in its gallery"
    else
      row "train report.html $mode" FAILED \
        "$(grep -m1 'report.html not written' "$out/train-$mode.log" ||
          echo "none written; see train-$mode.log")"
    fi
  elif grep -q '^not run: ' "$out/train-$mode.log"; then
    not_ok "train-$mode" "train b16 128px $mode" ""
  else
    not_ok "train-$mode" "train b16 128px $mode" "$(elapsed "$t"); see train-$mode.log"
    # Still get a figure, and tell whether cuDNN's graph-API path is the cause.
    t=$(date +%s)
    if train_run "train-$mode-nograph" "$run_dir-nograph" UNETCU_CUDNN_GRAPH=0; then
      ips=$(jsonl_number tail "$run_dir-nograph/metrics.jsonl" images_per_sec)
      row "train $mode, graph API off" ok "$(printf '%.0f' "${ips:-0}") images/s (epoch 3)"
    else
      not_ok "train-$mode-nograph" "train $mode, graph API off" \
        "$(elapsed "$t"); see train-$mode-nograph.log"
    fi
  fi
}
train_and_predict() {
  local data=$out/synth-data t algos rival tried disagree served ckpt imgs
  if [ -z "$gpu" ]; then
    row "train" skipped "no GPU (nvidia-smi found none)"
    return 0
  fi
  if [ ! -x "$unetcu" ]; then
    row "train" FAILED "no unetcu binary; see build.log"
    return 0
  fi
  t=$(date +%s)
  if ! run synth 120 "$unetcu" synth "$data" --count 270 --width 256 --height 192; then
    not_ok synth "train" "$(elapsed "$t"); synth failed; see synth.log"
    return 0
  fi
  train_mode tf32
  # Where the direct kernels won their timing against cuDNN's choice in the TF32 run (the
  # "rival" notes of algorithms.txt; with TF32 the forward's and data gradient's direct kernel
  # is the tensor-core one where it applies): direction and shape, their time, cuDNN's, and
  # how many disagreed with cuDNN's output (a wrong kernel on this card).
  algos=$out/train-tf32/algorithms.txt
  if [ -f "$algos" ]; then
    rival='rival (direct|tensor-core) kernel'
    tried=$(grep -cE "$rival" "$algos")
    disagree=$(grep -E "$rival" "$algos" | grep -c 'DISAGREES')
    served=$(grep -E "$rival: [0-9.e+-]* ms, SERVES" "$algos" |
      sed -E 's/^([a-z-]+ [^:]*):.*rival ([a-z-]+) kernel: ([0-9.e+-]*) ms, SERVES \(cuDNN.s choice ([0-9.e+-]*) ms\).*/\1 (\2): \3 vs \4 ms/' |
      paste -sd ';' -)
    row "direct convs vs cuDNN, tf32" "$([ "$disagree" = 0 ] || echo FAILED)" \
      "serve $(grep -cE "$rival: [0-9.e+-]* ms, SERVES" "$algos") of $tried, $disagree disagree: ${served:-none}"
  fi
  # Inference on the GPU against the CPU, from the TF32 run's best weights: the same 8 images
  # through `unetcu predict` on the CPU and on the GPU twice, probabilities compared. With fp32
  # convolutions (--no-tf32) eval-mode BatchNorm and cuDNN put them ~1e-5 apart: 1e-3 fails.
  # With TF32 (the default), where the tensor-core kernels serve (the stem's forward, the
  # decoder's 128x128 layers) as cuDNN's TF32 engines elsewhere, the only check of them in the
  # whole network at the training's sizes: every operand rounded to 11 bits moves the logits by
  # some 1e-3 relative, more where they are large, and the evaluation forward is continuous (no
  # batch statistics; ReLU and max-pool move no more than their inputs): 0.1 fails, which a
  # wrong kernel (off by the order of the values) exceeds.
  ckpt=$out/train-tf32/best.safetensors
  [ -f "$ckpt" ] || return 0
  mapfile -t imgs < <(find "$data/images" -type f | sort | head -8)
  t=$(date +%s)
  if ! run predict_cpu 120 "$unetcu" predict --weights "$ckpt" "${imgs[@]}" \
         --out "$out/predict-cpu" --device cpu --probs --batch-size 8; then
    not_ok predict_cpu "predict --device cuda" "$(elapsed "$t"); see predict_cpu.log"
    return 0
  fi
  predict_on_gpu fp32 "predict --device cuda" 1e-3 --no-tf32
  predict_on_gpu tf32 "predict --device cuda, tf32" 0.1
}
# predict_on_gpu MODE LABEL BOUND [ARGS...]: `unetcu predict` on the GPU with ARGS into
# predict-cuda-MODE, its probabilities against predict-cpu's (row LABEL: the largest
# difference, over BOUND fails, and how many mask pixels differ).
predict_on_gpu() {
  local mode=$1 label=$2 bound=$3 t
  shift 3
  t=$(date +%s)
  if ! run "predict_cuda_$mode" 120 "$unetcu" predict --weights "$ckpt" "${imgs[@]}" \
         --out "$out/predict-cuda-$mode" --device cuda --probs --batch-size 8 "$@"; then
    not_ok "predict_cuda_$mode" "$label" "$(elapsed "$t"); see predict_cuda_$mode.log"
  elif python3 - "$out/predict-cuda-$mode" "$out/predict-cpu" "$bound" \
       > "$out/predict_compare_$mode.log" 2>&1 <<'PY'
import array, ast, pathlib, struct, sys
def load(path):
    """The float32 values of a .npy file as unetcu writes them (version 1.0, '<f4', C order)."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY" or data[6] != 1:
        sys.exit(f"{path}: not a version-1 .npy file")
    size = struct.unpack("<H", data[8:10])[0]
    header = ast.literal_eval(data[10:10 + size].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        sys.exit(f"{path}: {header['descr']} values{', Fortran order' * header['fortran_order']}")
    values = array.array("f", data[10 + size:])
    if sys.byteorder != "little":
        values.byteswap()
    return values
gpu, cpu = (pathlib.Path(d) for d in sys.argv[1:3])
bound = float(sys.argv[3])
files = sorted(gpu.glob("*_probs.npy"))
if not files:
    sys.exit("no *_probs.npy written on the GPU")
worst, differ, pixels = 0.0, 0, 0
for f in files:
    a, b = load(f), load(cpu / f.name)
    if len(a) != len(b):
        sys.exit(f"{f.name}: {len(a)} values on the GPU, {len(b)} on the CPU")
    worst = max([worst] + [abs(x - y) for x, y in zip(a, b)])
    differ += sum((x > 0.5) != (y > 0.5) for x, y in zip(a, b))
    pixels += len(a)
print(f"{len(files)} images; probabilities vs CPU: max |diff| {worst:.2e} (bound {bound:g});"
      f" masks differ in {differ} of {pixels} pixels")
sys.exit(0 if worst <= bound else 1)
PY
  then
    row "$label" ok "$(elapsed "$t"); $(tail -1 "$out/predict_compare_$mode.log")"
  else
    row "$label" FAILED "$(elapsed "$t"); $(tail -1 "$out/predict_compare_$mode.log")"
  fi
}

# bench_cuda_ops as it stands: every op and the training step, ours vs LibTorch CUDA, the
# memory-bound ops against equal-size device copies; then the step's timeline (CUPTI's activity
# trace of 5 replayed steps, read by tools/step_timeline.py: how the streams overlapped, where
# the compute stream, the critical path, waited and under which kernels).
default_benchmarks() {
  local t all step below copy tuning
  if [ ! -x "$gpu_bench" ]; then
    row "gpu ops vs LibTorch" skipped "bench_cuda_ops not built"
    return 0
  fi
  t=$(date +%s)
  if run bench_cuda_ops 240 "$gpu_bench" --runs 30; then
    if grep -q '^SKIPPED' "$out/bench_cuda_ops.log"; then
      row "gpu ops vs LibTorch" skipped "$(grep -m1 '^SKIPPED' "$out/bench_cuda_ops.log")"
      return 0
    fi
    all=$(grep -E '^all ' "$out/bench_cuda_ops.log" | awk '{print "ours " $2 " ms, LibTorch " $3 " ms, ratio " $4}')
    row "gpu ops vs LibTorch" ok "$(elapsed "$t"); one step's worth of ops: ${all:-ours only}"
  else
    not_ok bench_cuda_ops "gpu ops vs LibTorch" "$(elapsed "$t"); see bench_cuda_ops.log"
  fi
  step=$(grep -E '^training step:' "$out/bench_cuda_ops.log" | sed 's/^training step: //')
  [ -n "$step" ] && row "gpu train step b16 128px" "" "$step"
  tuning=$(grep -m1 -E '^step tuning' "$out/bench_cuda_ops.log" | sed 's/^step tuning //')
  [ -n "$tuning" ] && row "step tuning" "" "$tuning"
  below=$(grep -E 'families below 70% of the copy' "$out/bench_cuda_ops.log")
  copy=$(grep -o '256 MiB copy: [0-9.]* GB/s' "$out/bench_cuda_ops.log" | grep -o '[0-9.]* GB/s')
  [ -n "$copy" ] && row "memory-bound vs copy" "" "256 MiB copy $copy; $below"
  timeline_row step_trace step_timeline.txt "step timeline (cupti)" ""
}

# The PyTorch reference step: smp when it imports, else the same network in plain torch.nn
# (bench/reference/unet_replica.py), in the modes UNETCU_TORCH_MODES names.
pytorch_step() {
  local t smp_status smp model
  if [ -z "$gpu" ] || ! python3 -c 'import torch' 2> /dev/null; then
    row "pytorch step" skipped "no GPU, or torch not importable"
    return 0
  fi
  t=$(date +%s)
  run smp_bench 240 python3 "$root/bench/reference/train_smp.py" --bench --device cuda \
    --modes "$torch_modes"
  smp_status=$?
  smp=$(sed -n 's/^\([a-z_0-9]*\): median .*, \([0-9.]*\) images\/s.*/\1 \2 img\/s/p' "$out/smp_bench.log" |
    paste -sd, - | sed 's/,/, /g')
  model=$(head -1 "$out/smp_bench.log" | sed -n 's/^PyTorch [^ ]* + \(.*\): training step.*/\1/p')
  if [ $smp_status -eq 0 ]; then
    row "pytorch step" ok "$(elapsed "$t"); ${model:-?}: ${smp:-no mode finished}; see smp_bench.log"
  else
    not_ok smp_bench "pytorch step" \
      "$(elapsed "$t"); ${model:-?}: ${smp:-no mode finished}; see smp_bench.log"
  fi
}

# Nsight Compute's duration of every kernel of 3 replayed training steps (bench_cuda_ops
# --profile-steps opens the profiler range after the set-up), summed by family.
step_profile() {
  local t
  if [ -z "$gpu" ] || [ ! -x "$gpu_bench" ] || [ -z "$ncu_bin" ]; then
    row "step profile (ncu)" skipped "needs a GPU, bench_cuda_ops and ncu"
    return 0
  fi
  t=$(date +%s)
  if run ncu_step 150 "$ncu_bin" --profile-from-start off --metrics gpu__time_duration.sum --csv \
       --cache-control none --clock-control none "$gpu_bench" --profile-steps 3; then
    if python3 "$root/tools/ncu_step_summary.py" "$out/ncu_step.log" 3 > "$out/ncu_summary.txt" 2>&1; then
      row "step profile (ncu)" ok "$(elapsed "$t"); $(head -1 "$out/ncu_summary.txt" | sed 's/^ncu: //')"
    else
      row "step profile (ncu)" FAILED "$(elapsed "$t"); see ncu_step.log, ncu_summary.txt"
    fi
  else
    not_ok ncu_step "step profile (ncu)" "$(elapsed "$t"); see ncu_step.log"
  fi
}

# ---- 3. what every run must bring ---------------------------------------------------------------
# Correctness first (every kernel natively, then whole steps against the CPU), then the figures
# each run records: TF32 training and predict, every op and the default step against LibTorch, the
# memory-bound table, the step's timeline, PyTorch's step and Nsight Compute's profile. Sections
# 4 and 5 come after, so a tight budget cuts them, never these.
native_kernel_tests
step_check_rows
train_and_predict
default_benchmarks
pytorch_step
step_profile
# 2c's tools on the kernel tests asked for (UNETCU_CHECK_SANITIZE), when asked.
sanitizer_rows

# ---- 4. what has not yet run on a GPU -----------------------------------------------------------
# Opt-in settings built but never measured: each checked against the CPU (those that change what
# the step computes), then the step timed with it; then the fusion probe and the BatchNorms'
# Nsight Compute sections (the longest).
# The weight gradients' and Adam's streams with chained launches again (UNETCU_SIDE_PDL=1), as up
# to the ninth run: the default now launches their kernels unchained, so that no block of theirs
# is placed early to wait, holding an SM, behind a long kernel of its stream (the ninth run's
# compute stream waited 168 us a step under a 6-us final reduction placed so). The step and its
# timeline, against section 3's (the default's); no CPU-vs-GPU step: the same kernels, only
# ordered more strictly.
if bench_runs; then
  step_bench bench_cuda_ops_side_pdl "step, side streams chained" UNETCU_SIDE_PDL=1
  timeline_row step_trace_side_pdl step_trace_side_pdl.txt "step timeline, side chained" \
    UNETCU_SIDE_PDL=1
fi
# The tensor-core weight gradients in 4 waves (launches) instead of one: whether the compute
# stream, whose two longest gaps (118 and 78 us a step in the ninth run) fell under these
# kernels holding every SM on a weight-gradient stream, now gets SMs between the waves; the
# timeline shows the gaps. The CPU-vs-GPU steps run fp32 convolutions, where the tensor-core
# kernels do not run: what of the waves they check is the binary's TF32 case of forced direct
# convolutions (one small shape, exact sums); the native kernel tests check them whole.
step_variant step_check_mma_waves "cpu-vs-gpu step, 4-wave wgrad" UNETCU_MMA_WGRAD_WAVES=4
if bench_runs; then
  step_bench bench_cuda_ops_mma_waves "step, 4-wave wgrad" UNETCU_MMA_WGRAD_WAVES=4
  timeline_row step_trace_mma_waves step_trace_mma_waves.txt "step timeline, 4-wave wgrad" \
    UNETCU_MMA_WGRAD_WAVES=4
fi
# Knob variants of cuDNN's two best configurations timed beside them: whether a tile size or split
# the heuristics do not offer fills the card at the deep layers ("knob variant" in the log). (Its
# CPU-vs-GPU step passed in the ninth run; the step's time did not fit that run's budget.)
bench_runs && bench_variant bench_cuda_ops_knob_variants "step, cuDNN knob variants" \
  UNETCU_CUDNN_KNOB_VARIANTS=64 '^train_step' serving_summary
# Heuristics mode B's best configurations timed too.
bench_runs && bench_variant bench_cuda_ops_heuristics_b "step, cuDNN heuristics B too" \
  UNETCU_CUDNN_HEURISTICS_B=1 '^train_step' serving_summary
if [ "${UNETCU_CHECK_FUSION:-1}" != 0 ] && [ -n "$gpu" ]; then
  fusion_probe_row 100
fi
# Why the BatchNorms in training stay at 53-61% of the copy (the eighth run): Nsight Compute's
# sections for the first two of the step's multi-block BatchNorms each way, three kernels each
# (statistics sums, final, normalising pass: encoder.bn1 and layer1's first; gradient sums,
# final, gradient pass: the decoder's last two, 262,144 rows of 16 channels), where they run in
# the step, caches as the kernels before them left them.
ncu_detail ncu_bn_forward "BatchNorm forward (ncu)" 'StatsSrc|StatsEpilogue|Normalize<' 6 \
  demangled ""
ncu_detail ncu_bn_backward "BatchNorm backward (ncu)" 'GradSrc|GradEpilogue|GradApply<' 6 \
  demangled ""
# The same BatchNorms' passes last rows first, each way (ncu takes the first kernels that match,
# so forward and backward need a call each): their L2 hit rates beside the two rows above.
ncu_detail ncu_bn_forward_last_first "BN fwd last first (ncu)" 'Normalize<' 2 demangled \
  UNETCU_BN_PASS_LAST_FIRST=1
ncu_detail ncu_bn_backward_last_first "BN bwd last first (ncu)" 'GradApply<' 2 demangled \
  UNETCU_BN_PASS_LAST_FIRST=1
# The Dice forward and counts, now in parts (8 blocks an image), where one block an image held
# 34-41% of the copy: the parts' kernel and the totals' kernel of the step's loss.
ncu_detail ncu_loss "Dice + counts (ncu)" 'loss_parts_kernel|loss_totals_kernel' 2 function ""

# ---- 5. measured before: again while the budget lasts -------------------------------------------
# What earlier runs measured (bench/RESULTS.md): training with full fp32 convolutions
# (--no-tf32), each opt-in setting's CPU-vs-GPU steps, then the step with each default turned
# off and each opt-in on, newest first; the budget cuts the last.
[ -n "$gpu" ] && [ -d "$out/synth-data" ] && [ -x "$unetcu" ] && train_mode fp32
# The settings the ninth run timed once each (each 1.6-2.2% slower than the default, one round):
# cuDNN's knob variants (the CPU-vs-GPU step), the decoder's upsampled halves copied into their
# concatenations instead of written there in place, the BatchNorms' second passes from the last
# rows to the first (the same bits: the check is the emulated one's, run natively), and 32 of
# the heuristics' configurations timed per shape instead of 12.
step_variant step_check_knobs "cpu-vs-gpu step, cuDNN knob variants" \
  UNETCU_CUDNN_KNOB_VARIANTS=16 "$(marked_plan "knob variant")" "a knob variant"
step_variant step_check_concat_copies "cpu-vs-gpu step, concat copies" UNETCU_UPSAMPLE_IN_PLACE=0
step_variant step_check_bn_last_first "cpu-vs-gpu step, BN passes last first" \
  UNETCU_BN_PASS_LAST_FIRST=1
if bench_runs; then
  step_bench bench_cuda_ops_concat_copies "step, concat copies" UNETCU_UPSAMPLE_IN_PLACE=0
  step_bench bench_cuda_ops_bn_last_first "step, BN passes last first" UNETCU_BN_PASS_LAST_FIRST=1
  step_bench bench_cuda_ops_32_candidates "step, top 32 cuDNN configs" UNETCU_CUDNN_CANDIDATES=32
fi
# The forward and backward-data as a cuBLAS GEMM and a gather wherever they apply (the deep
# layers), not only where timed faster: the cuBLAS calls' dimensions on the real step.
step_variant step_check_gemm "cpu-vs-gpu step, GEMM convolutions always" UNETCU_GEMM_CONV=1
# The GEMM convolutions everywhere they apply, with cuBLASLt's algorithms searched per shape.
step_variant step_check_gemm_search "cpu-vs-gpu step, GEMM search" \
  "UNETCU_GEMM_CONV=1 UNETCU_GEMM_SEARCH=1"
# The weight gradients' cuDNN plans on 112 SMs: those that serve.
step_variant step_check_wgrad_sms "cpu-vs-gpu step, wgrad on 112 SMs" \
  UNETCU_CUDNN_WGRAD_SMS=112 "$(marked_plan " SMs")" "a carved-out plan"
# Every head path timed per shape at the first step, the fastest kept.
step_variant step_check_path_timing "cpu-vs-gpu step, paths timed" UNETCU_PATH_TIMING=1
step_variant step_check_mask_from_y "cpu-vs-gpu step, ReLU mask from y" \
  UNETCU_BN_RELU_MASK_FROM_INPUT=0
# The other stream schedules (the default joins the weight gradients once a backward pass, on
# three streams, with Adam in parts beside it): no stream priorities; one weight-gradient
# stream; a join after each convolution; the serial schedule (those and Adam after the backward
# pass); chained launches off (each hand-written kernel may otherwise start while the one
# before it ends).
step_variant step_check_priority "cpu-vs-gpu step, no stream priority" UNETCU_STREAM_PRIORITY=0
step_variant step_check_one_stream "cpu-vs-gpu step, 1 wgrad stream" UNETCU_WGRAD_STREAMS=1
step_variant step_check_per_conv_join "cpu-vs-gpu step, join per convolution" UNETCU_LATE_JOIN=0
step_variant step_check_serial "cpu-vs-gpu step, serial schedule" \
  "UNETCU_LATE_JOIN=0 UNETCU_EARLY_ADAM=0 UNETCU_WGRAD_STREAMS=1"
step_variant step_check_pdl "cpu-vs-gpu step, chained launches off" UNETCU_PDL=0
if bench_runs; then
  # Each head shape's fastest path kept (the row counts them).
  bench_variant bench_cuda_ops_path_timing "step, paths timed" UNETCU_PATH_TIMING=1 \
    '^train_step' serving_summary
  # The step with cuDNN's convolutions only: what the direct kernels bring where they were
  # timed faster (the "rival" notes of algorithms.txt say where).
  step_bench bench_cuda_ops_cudnn_only "step, cuDNN convolutions only" UNETCU_DIRECT_CONV=0
  # The weight gradients' cuDNN plans asked for 112 and 96 of the card's SMs (cuDNN's SM
  # carveout): whether the compute stream's kernels, finding SMs free beside them, gain more
  # than the slower weight gradients cost ("N SMs" in the log), and the timeline with 112.
  bench_variant bench_cuda_ops_wgrad_112 "step, wgrad on 112 SMs" \
    UNETCU_CUDNN_WGRAD_SMS=112 '^train_step' serving_summary
  bench_variant bench_cuda_ops_wgrad_96 "step, wgrad on 96 SMs" \
    UNETCU_CUDNN_WGRAD_SMS=96 '^train_step' serving_summary
  timeline_row step_trace_wgrad_112 step_trace_wgrad_112.txt "step timeline, wgrad on 112 SMs" \
    UNETCU_CUDNN_WGRAD_SMS=112
  # cuBLASLt's algorithms timed per GEMM shape: whether the GEMM convolutions then win more
  # shapes from cuDNN ("cuBLASLt algorithm" in the log).
  step_bench bench_cuda_ops_gemm_search "step, GEMM algorithms searched" UNETCU_GEMM_SEARCH=1
  # The BatchNorm + ReLU backward reading its mask from the output (y > 0) instead of forming
  # it from x: what the two reads of a tensor fewer a layer bring.
  step_bench bench_cuda_ops_mask_from_y "step, ReLU mask from y" UNETCU_BN_RELU_MASK_FROM_INPUT=0
  # The step without the GEMM convolutions (the "GEMM + gather" notes of algorithms.txt say
  # where it was timed faster than cuDNN's choice).
  step_bench bench_cuda_ops_no_gemm "step, no GEMM convolutions" UNETCU_GEMM_CONV=0
  # Every stream at the default priority: what putting the compute stream (the critical path)
  # first brings.
  step_bench bench_cuda_ops_priority "step, no stream priority" UNETCU_STREAM_PRIORITY=0
  # The graph-API engine configurations timed per shape cut to the heuristics' top 4 (12 by
  # default): what timing more of cuDNN's ranking brings.
  step_bench bench_cuda_ops_four_candidates "step, top 4 cuDNN configs" UNETCU_CUDNN_CANDIDATES=4
  # The other stream schedules, each default turned off in turn, then all (the serial
  # schedule: one weight-gradient stream joined after each convolution, Adam after the
  # backward pass): what each default brings, on this card.
  step_bench bench_cuda_ops_per_conv_join "step, join per convolution" UNETCU_LATE_JOIN=0
  step_bench bench_cuda_ops_late_adam "step, Adam after the backward" UNETCU_EARLY_ADAM=0
  step_bench bench_cuda_ops_one_stream "step, 1 wgrad stream" UNETCU_WGRAD_STREAMS=1
  step_bench bench_cuda_ops_serial "step, serial schedule" \
    "UNETCU_LATE_JOIN=0 UNETCU_EARLY_ADAM=0 UNETCU_WGRAD_STREAMS=1"
  # The convolutions and the step again with cuDNN's descriptor API alone: what the graph-API
  # engines bring (the per-family rows above are with them).
  bench_variant bench_cuda_ops_nograph "graph API off" UNETCU_CUDNN_GRAPH=0 \
    '^(conv[.]|train_step)' nograph_summary
  # The reductions, the copies they are held to and the step without chained launches
  # (UNETCU_PDL=0): the memory-bound table of that log against the one above says what
  # overlapping each kernel's start with the previous one's end brings.
  bench_variant bench_cuda_ops_pdl "chained launches off" UNETCU_PDL=0 \
    '^(bn[.]|bn_relu|bn_add_relu|dice|confusion|limits|train_step)' variant_summary
fi

# ---- 6. why chosen kernels take their time (opt-in) ----------------------------------------------
ncu_detail_rows
# ---- 7. the table -----------------------------------------------------------------------------
print_table
