#!/bin/sh
# bench/loader_vs_torch.sh: the batch loader's throughput beside PyTorch's DataLoader, one run
# after the other on the same cache file, with the ratios.
#
#   bench/loader_vs_torch.sh BUILD_DIR DATA_DIR CACHE_DIR [PYTHON]
#
# BUILD_DIR holds bench/bench_cpu_loader; DATA_DIR a data set (e.g. from `unetcu synth`); its
# 128x128 cache is built in CACHE_DIR if missing. PYTHON needs torch and numpy.
set -eu
build=$1 data=$2 cache_dir=$3 python=${4:-python3}
here=$(dirname "$0")
ours=$("$build/bench/bench_cpu_loader" --data "$data" --cache-dir "$cache_dir" \
  --benchmark_filter=loader/ --benchmark_min_time=2 --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_format=csv 2>/dev/null)
cache=$("$build/bench/bench_cpu_loader" --data "$data" --cache-dir "$cache_dir" \
  --benchmark_filter=NONE 2>&1 >/dev/null | sed -n 's/^cache: //p')
torch=$("$python" "$here/reference/loader_torch.py" --cache "$cache" 2>/dev/null)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$torch" | head -1
echo "| workers | augment | ours images/s (median of 3) | PyTorch images/s | ours / PyTorch |"
echo "|---|---|---|---|---|"
for w in 1 2; do
  for a in 0 1; do
    o=$(echo "$ours" | grep "workers:$w/augment:$a/real_time_median" | cut -d, -f7)
    t=$(echo "$torch" | grep "^| $w | $a |" | cut -d'|' -f4 | tr -d ' ')
    awk -v w="$w" -v a="$a" -v o="$o" -v t="$t" \
      'BEGIN { printf "| %s | %s | %.0f | %s | %.1f |\n", w, a, o, t, o / t }'
  done
done
