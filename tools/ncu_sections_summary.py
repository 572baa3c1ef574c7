#!/usr/bin/env python3
"""One line per kernel from Nsight Compute's full sections, as text.

    tools/ncu_sections_summary.py NCU_LOG

NCU_LOG is what `ncu --section SpeedOfLight --section Occupancy --section LaunchStats --section
WarpStateStats --section MemoryWorkloadAnalysis ...` printed (tools/device_check.sh's
ncu_detail rows). The log holds, per kernel, a header line (name, grid and block) and tables of
"Metric Name / Metric Unit / Metric Value", with the rules' advice between them; read whole it
is hundreds of lines a kernel. This prints what tells a memory-bound kernel's story, so that the
device check's summary carries it even when the logs do not come back: the duration, DRAM
throughput (% of peak and GB/s), the L2 and L1 hit rates, achieved against theoretical
occupancy, registers a thread, cycles between a warp's instructions and the costliest stall
reason with its share (from the warp-state rule's text). A metric the log lacks is left out.
Exits 1 when the log has no kernel.
"""
import re
import sys

from ncu_step_summary import UNIT_NS, family

# "  void f<...>(T1) (1, 2048, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0"
HEADER = re.compile(r"^  (\S.*?) \((\d+), (\d+), (\d+)\)x\((\d+), (\d+), (\d+)\)")
# "    Duration                         us        16.83" (the unit may be blank)
METRIC = re.compile(r"^ {4,}(\S.*?)\s{2,}(?:(\S+)\s+)?(-?[\d,]*\.?\d+)\s*$")
# A rule's first line ("    OPT   text"); its text goes on in lines indented further.
RULE = re.compile(r"^ {4}(OPT|INF|WRN|ERR) +(.*)$")
STALL = re.compile(r"being stalled (.+?)\. .*?represents about ([\d.]+)% of the total")


def number(text):
    return float(text.replace(",", ""))


def read_kernels(path):
    """Per kernel, in the log's order: its name, grid, block, metrics {(name, unit): value} and
    its rules' texts. A name can come with two units (Memory Throughput: % of peak under speed
    of light, bytes a second under the memory workload), so the unit is part of the key."""
    kernels = []
    rule = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = HEADER.match(line)
            if m:
                kernels.append({"name": m.group(1), "grid": m.group(2, 3, 4),
                                "block": m.group(5, 6, 7), "metrics": {}, "rules": []})
                rule = None
                continue
            if not kernels:
                continue
            k = kernels[-1]
            m = RULE.match(line)
            if m:
                k["rules"].append(m.group(2).strip())
                rule = k["rules"]
                continue
            if rule is not None and line.startswith(" " * 10) and line.strip():
                rule[-1] += " " + line.strip()
                continue
            rule = None
            m = METRIC.match(line)
            if m:
                key = (m.group(1).strip(), (m.group(2) or "").strip())
                k["metrics"].setdefault(key, number(m.group(3)))
    return kernels


def metric(k, name, units=None):
    """The value of metric `name` (with a unit in `units`, when given), else None."""
    for (n, unit), value in k["metrics"].items():
        if n == name and (units is None or unit in units):
            return value, unit
    return None


def describe(k):
    parts = []
    duration = metric(k, "Duration", UNIT_NS)
    if duration:
        parts.append(f"{duration[0] * UNIT_NS[duration[1]] / 1e3:.2f} us")
    dram = metric(k, "DRAM Throughput", ("%",))
    if dram:
        parts.append(f"DRAM {dram[0]:.1f}% of peak")
    rate = metric(k, "Memory Throughput", ("Mbyte/s", "Gbyte/s", "Tbyte/s"))
    if rate:
        scale = {"Mbyte/s": 1e-3, "Gbyte/s": 1.0, "Tbyte/s": 1e3}[rate[1]]
        parts.append(f"{rate[0] * scale:,.0f} GB/s")
    for label, name in (("L2 hit", "L2 Hit Rate"), ("L1 hit", "L1/TEX Hit Rate")):
        hit = metric(k, name, ("%",))
        if hit:
            parts.append(f"{label} {hit[0]:.1f}%")
    achieved = metric(k, "Achieved Occupancy", ("%",))
    theoretical = metric(k, "Theoretical Occupancy", ("%",))
    if achieved:
        parts.append(f"occupancy {achieved[0]:.1f}%" +
                     (f" of {theoretical[0]:.0f}%" if theoretical else ""))
    registers = metric(k, "Registers Per Thread")
    if registers:
        parts.append(f"{registers[0]:.0f} registers")
    cycles = metric(k, "Warp Cycles Per Issued Instruction")
    if cycles:
        parts.append(f"{cycles[0]:.1f} cycles an instruction")
    stalls = [STALL.search(text) for text in k["rules"]]
    stalls = [s for s in stalls if s]
    if stalls:
        worst = max(stalls, key=lambda s: float(s.group(2)))
        parts.append(f"stalled {worst.group(1)[:90]} ({worst.group(2)}%)")
    grid, block = ", ".join(k["grid"]), ", ".join(k["block"])
    return f"{family(k['name'])} ({grid})x({block}): " + ("; ".join(parts) or "no metrics")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    kernels = read_kernels(sys.argv[1])
    if not kernels:
        print(f"{sys.argv[1]}: no kernel sections")
        sys.exit(1)
    for k in kernels:
        print(describe(k))


if __name__ == "__main__":
    main()
