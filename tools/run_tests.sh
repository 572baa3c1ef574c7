#!/usr/bin/env bash
# tools/run_tests.sh: set up (tools/setup.sh) and run every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir "${UNETCU_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
