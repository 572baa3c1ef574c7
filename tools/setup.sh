#!/usr/bin/env bash
# tools/setup.sh: install the build dependencies (Debian/Ubuntu packages) when they are
# missing, then configure and build unetcu into build/ (or $UNETCU_BUILD_DIR).
# CUDA parts are built when nvcc is on the PATH (or at /usr/local/cuda/bin).
# Re-running it is cheap: packages are checked first and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3 (standard library only) runs the tools tests (tests/tools); procps gives them (and
# tools/device_check.sh) pgrep and pkill.
packages=(cmake g++ make libstb-dev doctest-dev libopenblas-dev libbenchmark-dev libtorch-dev python3
  procps)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build=${UNETCU_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${UNETCU_CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
echo "setup: built $build/unetcu"
