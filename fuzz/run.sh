#!/usr/bin/env bash
# fuzz/run.sh [SECONDS]: builds the libFuzzer target fuzz_decode with clang in build-fuzz/
# (or $UNETCU_FUZZ_BUILD) and runs it for SECONDS (default 60) from the seeds in fuzz/seeds.
# New inputs go to BUILD/fuzz-corpus (kept between runs); a crashing input is written as
# BUILD/fuzz-crash-* and the script exits non-zero. The final statistics (executions, seconds,
# coverage) are printed at the end. Needs clang with libFuzzer (Debian: apt-get install clang).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${UNETCU_FUZZ_BUILD:-build-fuzz}

mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DUNETCU_FUZZ=ON -DUNETCU_CUDA=OFF -DUNETCU_BENCH=OFF \
  -DUNETCU_TORCH_TESTS=OFF > "$build/configure.log"
cmake --build "$build" --target fuzz_decode -j2
mkdir -p "$build/fuzz-corpus"
# 2 GB of memory per input at most (an image at the fuzz size limit needs far less); inputs up
# to 64 KB, enough for every header and a few compressed blocks.
UBSAN_OPTIONS=suppressions=fuzz/ubsan.supp:halt_on_error=1:print_stacktrace=1 \
"$build/fuzz_decode" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
  -artifact_prefix="$build/fuzz-crash-" -print_final_stats=1 "$build/fuzz-corpus" fuzz/seeds
