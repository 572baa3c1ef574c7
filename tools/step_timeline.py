#!/usr/bin/env python3
"""How a training step's GPU work overlapped, from `bench_cuda_ops --trace-steps K --trace-out
CSV` (CUPTI's timeline of every kernel, copy and memset; bench/kernel_trace.h).

    tools/step_timeline.py CSV

Nsight Compute (tools/ncu_step_summary.py) gives each kernel's duration with every kernel run
alone; this gives the same step as it ran, its streams side by side. Kernels of a replayed CUDA
graph all carry the stream it was launched into, so the work is put into lanes by kernel
family instead: "wgrad" (the weight and bias gradients: cuDNN's wgrad kernels and ours, which
run on the side streams), "adam" (the optimizer's stream) and "compute" (the rest: the forward
pass, the data gradients, BatchNorm, the loss; the compute stream, the step's critical path).

Prints, averaged over the traced steps (the first left out when there are more than two: it
may still pay for first launches):
  span       the step, from its first activity's start to its last one's end;
  busy/idle  the time something runs on the GPU / nothing does (launch gaps, host waits);
  lanes      each lane's busy time, and how long it ran alone;
  compute gaps  the time inside the span when no compute-lane work runs, split into the GPU
             idle and only other lanes running (the critical path waiting on the side
             streams, or done while they finish), and the tail after the last compute work;
  from compute start  the span less the head before the first compute work: the benchmark
             synchronises between traced steps, so the head holds the batch upload and the
             host's graph launch, which steps issued back to back overlap with the step
             before; this is the figure to set beside the benchmark's time a step;
  concurrency  the share of the span with 0, 1, 2 and 3 or more activities at once;
and, for the last step, the longest gaps of the compute lane with what ran before and after;
then the kernels the compute lane waited under: for each kernel of the other lanes, its overlap
with the compute lane's gaps, summed a step (kernels side by side in a gap are each credited
with their overlap), averaged like the figures: a long kernel that holds the SMs while the
critical path waits shows here.
"""
import csv
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_step_summary import family  # noqa: E402

LANES = ("compute", "wgrad", "adam", "copy")


def lane(kind, name):
    """The lane of one activity (see the module text)."""
    if kind != "kernel":
        return "copy"
    label = family(name).lower()
    if "adam" in label:
        return "adam"
    if ("wgrad" in label or "filter" in label or "biasgrad" in label
            or "convolve_common_engine" in label):
        return "wgrad"
    return "compute"


def read(path):
    """{step: [(start_ns, end_ns, lane, name)]} from the CSV; records before step 0 dropped."""
    steps = defaultdict(list)
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        need = {"step", "kind", "start_ns", "end_ns", "name"}
        if rows.fieldnames is None or not need <= set(rows.fieldnames):
            sys.exit(f"{path}: expected the columns {sorted(need)}, got {rows.fieldnames}")
        for r in rows:
            step = int(r["step"])
            start, end = int(r["start_ns"]), int(r["end_ns"])
            if step < 0:
                continue
            if end < start:
                sys.exit(f"{path}: an activity ends before it starts: {r}")
            steps[step].append((start, end, lane(r["kind"], r["name"]), r["name"]))
    if not steps:
        sys.exit(f"{path}: no activity inside a traced step")
    return steps


def union(intervals):
    """The merged, sorted intervals."""
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def length(merged):
    return sum(e - s for s, e in merged)


def intersect(a, b):
    """Length of the intersection of two merged interval lists."""
    i = j = 0
    total = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            total += e - s
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def concurrency(acts, begin, end):
    """ns of [begin, end) with 0, 1, 2 and 3+ activities running."""
    events = sorted([(s, 1) for s, _, _, _ in acts] + [(e, -1) for _, e, _, _ in acts])
    out = [0, 0, 0, 0]
    running, at = 0, begin
    for t, d in events:
        out[min(running, 3)] += t - at
        running += d
        at = t
    out[min(running, 3)] += end - at
    return out


def analyse(acts):
    """The figures of one step (ns), plus its compute gaps with their neighbours."""
    begin = min(s for s, _, _, _ in acts)
    end = max(e for _, e, _, _ in acts)
    everything = union([(s, e) for s, e, _, _ in acts])
    by_lane = {name: union([(s, e) for s, e, l, _ in acts if l == name]) for name in LANES}
    others = {name: union([(s, e) for s, e, l, _ in acts if l != name]) for name in LANES}
    figures = {
        "span": end - begin,
        "busy": length(everything),
        "kernels": sum(1 for a in acts if a[2] != "copy"),
    }
    for name in LANES:
        busy = length(by_lane[name])
        figures[f"{name} busy"] = busy
        figures[f"{name} alone"] = busy - intersect(by_lane[name], others[name])
    compute = by_lane["compute"]
    gaps = []
    if compute:
        # Inside the compute lane's first and last work: each gap, and how much of it the GPU
        # had other work for.
        for (s0, e0), (s1, _) in zip(compute, compute[1:]):
            other = intersect([[e0, s1]], others["compute"])
            gaps.append((s1 - e0, other, e0, s1))
        figures["compute gaps, GPU idle"] = sum(g - o for g, o, _, _ in gaps)
        figures["compute gaps, other lanes only"] = sum(o for _, o, _, _ in gaps)
        figures["head before compute"] = compute[0][0] - begin
        figures["tail after compute"] = end - compute[-1][1]
        figures["from compute start"] = end - compute[0][0]
    for i, ns in enumerate(concurrency(acts, begin, end)):
        figures[f"{('0', '1', '2', '3+')[i]} at once"] = ns
    return figures, gaps


def short(name):
    return family(name)[:60]


def kernel_label(name):
    """A kernel's name without "void", "(anonymous namespace)::" and its parameters, at most
    100 characters (cuDNN's names carry their tile sizes near the end)."""
    name = name.replace("(anonymous namespace)::", "")
    if name.startswith("void "):
        name = name[5:]
    return name.split("(")[0][:100]


def waits_under(acts, gaps):
    """{kernel label: ns of the compute lane's gaps it overlapped} for one step."""
    out = defaultdict(int)
    for _, other, s0, s1 in gaps:
        if other == 0:
            continue
        for s, e, lane_name, name in acts:
            if lane_name != "compute" and s < s1 and e > s0:
                out[kernel_label(name)] += min(e, s1) - max(s, s0)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    steps = read(sys.argv[1])
    order = sorted(steps)
    used = order[1:] if len(order) > 2 else order
    results = [analyse(steps[s]) for s in used]
    keys = list(results[0][0].keys())
    mean = {k: sum(r[0].get(k, 0) for r in results) / len(results) for k in keys}
    span = mean["span"]
    print(f"timeline: {len(order)} traced steps, averaged over {len(used)} "
          f"(steps {used[0]}..{used[-1]}); {mean['kernels']:.0f} kernels a step")
    print(f"\n{'figure (per step)':<34} {'ms':>8} {'of span':>8}")
    for k in keys:
        if k == "kernels":
            continue
        print(f"{k:<34} {mean[k] / 1e6:8.3f} {mean[k] / span:8.1%}")
    _, gaps = results[-1]
    acts = sorted(steps[used[-1]])
    compute = [a for a in acts if a[2] == "compute"]
    print(f"\nlongest gaps of the compute lane (step {used[-1]}), us: gap, of it other lanes "
          f"running, the compute work before -> after")
    for gap, other, s, e in sorted(gaps, key=lambda g: -g[0])[:10]:
        before = max((a for a in compute if a[1] <= s), key=lambda a: a[1], default=None)
        after = min((a for a in compute if a[0] >= e), key=lambda a: a[0], default=None)
        print(f"{gap / 1e3:8.1f} {other / 1e3:8.1f}  {short(before[3]) if before else '-'} -> "
              f"{short(after[3]) if after else '-'}")
    under = defaultdict(float)
    for s, (_, step_gaps) in zip(used, results):
        for label, ns in waits_under(steps[s], step_gaps).items():
            under[label] += ns / len(used)
    print("\nthe compute lane waited under (us a step, its gaps' overlap with each kernel):")
    for label, ns in sorted(under.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{ns / 1e3:8.1f}  {label}")


if __name__ == "__main__":
    main()
