#!/usr/bin/env bash
# tools/stage_device_deps.sh [OUT]: copies from this machine what a bare GPU machine lacks to
# build unetcu (design/gpu-check.md): stb, doctest and Google Benchmark headers, the Google
# Benchmark library with its CMake package files, and OpenBLAS (cblas headers, the shared
# library and the Fortran runtime it needs). OUT defaults to .device-deps/ at the repository
# root (git-ignored); it is rebuilt from scratch each time.
#
# The layout mirrors /usr so that CMake finds everything from one prefix
# (-DUNETCU_DEPS_DIR=OUT, see tools/device_check.sh):
#   OUT/include/{stb/,doctest/,benchmark/,cblas.h,openblas_config.h,f77blas.h}
#   OUT/lib/{libopenblas.so.0,libopenblas.so,libgfortran.so.5,libquadmath.so.0}
#   OUT/lib/<multiarch>/{libbenchmark.so*,libbenchmark_main.a,cmake/benchmark/}
#   OUT/MANIFEST   where each piece came from, with package versions
# Shared libraries are used, not static archives, to keep the copy small (it travels with the
# working tree); tools/device_check.sh puts OUT/lib on LD_LIBRARY_PATH.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/.device-deps}
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
multiarch=${multiarch:-x86_64-linux-gnu}

die() { echo "stage_device_deps: $*" >&2; exit 1; }

# The file behind a shared-library soname, from the loader cache.
soname_path() {
  local path
  path=$(/sbin/ldconfig -p | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}')
  [ -n "$path" ] || die "$1 not found (install it: see the package named in the README)"
  readlink -f "$path"
}

# The package that owns a path, with its version, for the manifest.
package_of() {
  local pkg
  pkg=$(dpkg -S "$1" 2>/dev/null | head -1 | cut -d: -f1) || true
  if [ -n "$pkg" ]; then dpkg-query -W -f='${Package} ${Version}' "$pkg" 2>/dev/null; else echo "?"; fi
}

first_existing() {
  local p
  for p in "$@"; do [ -e "$p" ] && { echo "$p"; return 0; }; done
  return 1
}

rm -rf "$out"
mkdir -p "$out/include" "$out/lib/$multiarch/cmake"
manifest=$out/MANIFEST
echo "# staged by tools/stage_device_deps.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$manifest"
note() { printf '%-28s %-60s %s\n' "$1" "$2" "$(package_of "$2")" >> "$manifest"; }

# ---- headers --------------------------------------------------------------------------------
stb=$(first_existing /usr/include/stb) || die "stb headers not found (apt-get install libstb-dev)"
cp -r "$stb" "$out/include/stb"
note stb "$stb/stb_image.h"

doctest=$(first_existing /usr/include/doctest) || die "doctest not found (apt-get install doctest-dev)"
cp -r "$doctest" "$out/include/doctest"
note doctest "$doctest/doctest.h"

bench_inc=$(first_existing /usr/include/benchmark) ||
  die "Google Benchmark not found (apt-get install libbenchmark-dev)"
cp -r "$bench_inc" "$out/include/benchmark"
note benchmark-headers "$bench_inc/benchmark.h"

cblas_dir=$(dirname "$(readlink -f "$(first_existing /usr/include/"$multiarch"/cblas.h \
  /usr/include/"$multiarch"/openblas-pthread/cblas.h /usr/include/openblas/cblas.h)")") ||
  die "cblas.h not found (apt-get install libopenblas-dev)"
for h in cblas.h openblas_config.h f77blas.h; do
  [ -e "$cblas_dir/$h" ] && cp "$cblas_dir/$h" "$out/include/$h"
done
note cblas "$cblas_dir/cblas.h"

# ---- OpenBLAS and the Fortran runtime it links ----------------------------------------------
openblas=$(soname_path libopenblas.so.0)
cp "$openblas" "$out/lib/libopenblas.so.0"
ln -s libopenblas.so.0 "$out/lib/libopenblas.so"
note openblas "$openblas"
for dep in libgfortran.so.5 libquadmath.so.0; do
  path=$(soname_path "$dep")
  cp "$path" "$out/lib/$dep"
  note "$dep" "$path"
done

# ---- Google Benchmark -----------------------------------------------------------------------
bench_cmake=$(first_existing /usr/lib/"$multiarch"/cmake/benchmark /usr/lib/cmake/benchmark) ||
  die "Google Benchmark's CMake files not found (apt-get install libbenchmark-dev)"
cp -r "$bench_cmake" "$out/lib/$multiarch/cmake/benchmark"
# Every file the imported targets name, with the symlinks that lead to it.
for f in /usr/lib/"$multiarch"/libbenchmark.so* /usr/lib/"$multiarch"/libbenchmark_main.a; do
  [ -e "$f" ] || continue
  cp -P "$f" "$out/lib/$multiarch/"
done
note benchmark "$(readlink -f /usr/lib/"$multiarch"/libbenchmark.so)"

size=$(du -sm "$out" | cut -f1)
echo "# total ${size} MiB" >> "$manifest"
cat "$manifest"
echo "staged into $out (${size} MiB)"
if [ "$size" -gt 60 ]; then
  echo "warning: ${size} MiB is a lot to copy to the GPU machine with the working tree" >&2
fi
