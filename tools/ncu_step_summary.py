#!/usr/bin/env python3
"""Where a training step's GPU time goes, from Nsight Compute's kernel list.

    tools/ncu_step_summary.py NCU_CSV STEPS

NCU_CSV is what `ncu --csv --metrics gpu__time_duration.sum` printed for STEPS replayed steps of
`bench_cuda_ops --profile-steps STEPS` (tools/device_check.sh runs both). ncu runs the kernels
one at a time, so the total is the step with every overlap removed (the weight-gradient stream
included) and without the gaps between kernels; set beside the measured step it shows how much
the graph's concurrency and the launch gaps weigh.

Prints per step: the kernel count and total time, a table by family (our kernels by skeleton and
functor; cuDNN's by direction: fprop, dgrad, wgrad) and the 15 costliest kernels by name and
grid (the grid tells the layers apart).
"""
import csv
import re
import sys
from collections import defaultdict

UNIT_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6,
           "second": 1e9, "s": 1e9}


def read_rows(path):
    """(kernel name, grid, duration in ns) per profiled kernel, from ncu's details or raw CSV."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # skips ncu's ==PROF== lines
    rows = list(csv.reader(lines))
    if not rows:
        sys.exit(f"{path}: no CSV rows (did ncu profile anything?)")
    header = rows[0]
    if "Kernel Name" not in header:
        sys.exit(f"{path}: no 'Kernel Name' column in the header: {header[:8]}")
    name_at = header.index("Kernel Name")
    grid_at = header.index("Grid Size") if "Grid Size" in header else None
    grid = lambda r: r[grid_at].replace(" ", "") if grid_at is not None else ""
    out = []
    if "Metric Name" in header:  # details page: one row per (kernel, metric)
        metric_at, unit_at = header.index("Metric Name"), header.index("Metric Unit")
        value_at = header.index("Metric Value")
        for r in rows[1:]:
            if len(r) > value_at and r[metric_at] == "gpu__time_duration.sum":
                scale = UNIT_NS.get(r[unit_at].strip(), None)
                if scale is None:
                    sys.exit(f"{path}: unknown unit {r[unit_at]!r}")
                out.append((r[name_at], grid(r), float(r[value_at].replace(",", "")) * scale))
    else:  # raw page: one row per kernel, the second row holds the units
        if "gpu__time_duration.sum" not in header:
            sys.exit(f"{path}: no gpu__time_duration.sum column")
        at = header.index("gpu__time_duration.sum")
        scale = UNIT_NS.get(rows[1][at].strip(), None) if len(rows) > 1 else None
        body = rows[2:] if scale is not None else rows[1:]
        scale = scale or 1.0
        for r in body:
            if len(r) > at and r[at]:
                out.append((r[name_at], grid(r), float(r[at].replace(",", "")) * scale))
    if not out:
        sys.exit(f"{path}: no gpu__time_duration.sum values")
    return out


def strip_params(name):
    """The kernel's name without its parameter list (and without '(anonymous namespace)')."""
    return re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))


def family(name):
    """A short, stable label: ours by skeleton<functor>, cuDNN's by direction."""
    base = strip_params(name)
    if "unetcu" in base:
        for junk in ("void ", "unetcu::cuda::", "detail::"):
            base = base.replace(junk, "")
        return base.strip()
    low = base.lower()
    for direction in ("fprop", "dgrad", "wgrad"):
        if direction in low:
            return f"cuDNN {direction}"
    return "other: " + base[:60]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = read_rows(sys.argv[1])
    steps = int(sys.argv[2])
    total = sum(ns for _, _, ns in rows)
    print(f"ncu: {len(rows)} kernels in {steps} steps: {len(rows) / steps:.0f} kernels and "
          f"{total / steps / 1e6:.3f} ms of kernel time per step, run one at a time")
    by_family = defaultdict(lambda: [0, 0.0])
    by_kernel = defaultdict(lambda: [0, 0.0])
    for name, grid, ns in rows:
        f = by_family[family(name)]
        f[0] += 1
        f[1] += ns
        short = strip_params(name).replace("void ", "").replace("unetcu::cuda::", "")
        k = by_kernel[f"{short[:90]} {grid}"]
        k[0] += 1
        k[1] += ns
    print(f"\n{'family':<72} {'per step':>9} {'ms/step':>9} {'share':>7} {'us each':>8}")
    for name, (n, ns) in sorted(by_family.items(), key=lambda kv: -kv[1][1]):
        print(f"{name[:72]:<72} {n / steps:9.1f} {ns / steps / 1e6:9.3f} {ns / total:7.1%} "
              f"{ns / n / 1e3:8.2f}")
    print(f"\n15 costliest kernels (by total time)\n{'kernel':<110} {'ms/step':>9} {'us each':>8}")
    for name, (n, ns) in sorted(by_kernel.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"{name:<110} {ns / steps / 1e6:9.3f} {ns / n / 1e3:8.2f}")


if __name__ == "__main__":
    main()
