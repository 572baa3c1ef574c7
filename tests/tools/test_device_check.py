#!/usr/bin/env python3
"""tools/device_check.sh's own logic, run here without a GPU against stand-ins: a cmake that
builds nothing, test binaries that pass or print a failed check, a compute-sanitizer whose
tools pass, report a race, refuse the device or hang, a bench_cuda_ops that prints a step and
a timeline, an unetcu that trains and predicts, and an nvidia-smi that finds a GPU only when
asked to. Checked: the table's rows (the first failed check named, a
tool's first report instead of its banner, a tool out of time, the phases the spent budget
kept from running named in one row), the order of the full check (what every run must bring,
then what has not yet run on a GPU, then what earlier runs measured) and that a tight budget
cuts the last of it, not the first, a quick A/B (its rounds and nothing of the full check),
UNETCU_CHECK_RACECHECK, UNETCU_CHECK_PACK (OUTDIR left as
summary.txt and logs.tar.gz) and a check stopped by a signal (its table so far printed, its
running phase stopped at once, nothing left running). A GPU machine runs the real thing; a
mistake here would cost one of its runs."""
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CHECK = os.path.join(ROOT, "tools", "device_check.sh")

# A failed doctest check as the native tests print it.
FAILURE = "/somewhere/tests/emu/test_x.cpp:12: ERROR: CHECK( a == b ) is NOT correct!"

# compute-sanitizer --tool TOOL --error-exitcode 9 --print-limit 20 BINARY ARGS...
SANITIZER = r"""#!/bin/bash
tool=$2; shift 6
echo "========= COMPUTE-SANITIZER"
case $tool in
  memcheck) "$@"; echo "========= ERROR SUMMARY: 0 errors"; exit 0;;
  racecheck)
    case "$*" in
      *hang*) setsid "$@" "$MARKER" < /dev/null > /dev/null 2>&1 & sleep 300;;
      *) echo "========= Error: Race reported between Write access at kernel_a+0x10"
         echo "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)"; exit 9;;
    esac;;
  synccheck) echo "========= Error: Device not supported"; exit 1;;
  initcheck) "$@"; echo "========= ERROR SUMMARY: 0 errors"; exit 0;;
esac
"""

# A native test binary: passes, or (FAIL_TESTS=1) prints a failed check; its algorithm report
# has our kernel serving one forward and not another, and with UNETCU_CUDNN_KNOB_VARIANTS a
# knob variant serving one shape (printed twice); with the marker argument it stands for a test process a sanitizer left behind, and stays (as itself, so that
# its command line still names it).
TESTS = r"""#!/bin/bash
case "$*" in *"$MARKER"*) for _ in $(seq 300); do sleep 1; done; exit 0;; esac
if [ "${FAIL_TESTS:-0}" = 1 ]; then echo "FAILURE"; exit 1; fi
if [ -n "${PHASE_SECONDS:-}" ]; then sleep "$PHASE_SECONDS"; fi
echo "fwd n2 64x64x32 -> 64x64x16: ALGO_1; rival direct kernel: 0.01 ms, SERVES (cuDNN's choice 0.02 ms)"
echo "bwd-data n2 64x64x32 -> 64x64x16: ALGO_1; rival direct kernel: 0.05 ms, not faster"
if [ -n "${UNETCU_CUDNN_KNOB_VARIANTS:-}" ]; then  # the algorithm report, printed twice
  for _ in 1 2; do
    echo "bwd-data n2 8x8x256 -> 8x8x256: ALGO_1; overwriting runs graph engine 71 [TILE=2, knob variant] (tensor cores) 0.01 ms; accumulating runs graph engine 71 [knob variant] 0.01 ms"
    echo "fwd n2 8x8x256 -> 8x8x256: ALGO_1; overwriting runs graph engine 67 (tensor cores) 0.01 ms"
  done
fi
echo "[doctest] test cases:    3 |    3 passed | 0 failed | 9 skipped"
echo "[doctest] assertions:   42 |   42 passed | 0 failed |"
""".replace("FAILURE", FAILURE)

# bench_cuda_ops: the step's line (and, unless UNETCU_TUNE_STEP=0, the step tuning's), the
# memory-bound table's last line, and with --trace-out a CUPTI-like CSV of two steps
# (tools/step_timeline.py reads it).
BENCH = r"""#!/bin/bash
if [ -n "${PHASE_SECONDS:-}" ]; then sleep "$PHASE_SECONDS"; fi
while [ $# -gt 0 ]; do
  if [ "$1" = --trace-out ]; then
    printf 'step,kind,start_ns,end_ns,name\n0,kernel,0,1000,conv_fwd\n1,kernel,2000,3000,conv_fwd\n' > "$2"
  fi
  shift
done
if [ "${UNETCU_TUNE_STEP:-}" = 0 ]; then
  echo "training step: 3.70 ms, 4323 images/s (untuned)"
else
  echo "training step: 3.70 ms, 4323 images/s"
  echo "step tuning at batch 16 (median of 3 x 10 replays): as first issued 3.700 ms; side streams chained 3.650 ms (-1.4%); kept: side streams chained"
fi
echo "3 of 11 families below 70% of the copy"
"""

# unetcu: synth (8 images), train (3 epochs of metrics, an algorithm list with a tensor-core
# kernel serving, best weights, a report.html with two gallery images or with FAIL_REPORT=1 the
# warning instead; with FAIL_TRAIN=1 it fails unless cuDNN's graph API is off) and
# predict (a .npy of four probabilities: 0.49 on the CPU, 0.490001 on the GPU with --no-tf32,
# 0.51 with TF32, or 0.9 with FAIL_PREDICT_TF32=1).
UNETCU = r"""#!/bin/bash
cmd=$1 first=${2:-} args=" $* "
out=
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
case $cmd in
  synth) mkdir -p "$first/images"; for i in 1 2 3; do : > "$first/images/ISIC_$i.jpg"; done;;
  train)
    if [ "${FAIL_TRAIN:-0}" = 1 ] && [ "${UNETCU_CUDNN_GRAPH:-1}" != 0 ]; then
      echo "error: cuDNN refused"; exit 1
    fi
    mkdir -p "$out"
    for e in 1 2 3; do
      echo "{\"epoch\": $e, \"train_loss\": 0.5, \"images_per_sec\": 40${e}5.2, \"epoch_seconds\": 2.5}"
    done > "$out/metrics.jsonl"
    echo "forward 16x128x128x16 -> 16 3x3: runs graph engine 5 [tensor cores]; rival tensor-core kernel: 0.0281 ms, SERVES (cuDNN's choice 0.0464 ms)" > "$out/algorithms.txt"
    if [ "${FAIL_REPORT:-0}" = 1 ]; then
      echo "warning: $out/report.html not written: cannot encode a 128x128 PNG"
    else
      echo '<figure><img alt="a" src=""></figure>' > "$out/report.html"
      echo '<figure><img alt="b" src=""></figure>' >> "$out/report.html"
    fi
    if [ "${BIG_OUTPUT:-0}" = 1 ]; then  # weights as large as the pack leaves out, a long log
      head -c 5242880 /dev/zero > "$out/best.safetensors"
      echo "first line of the training log"
      yes "epoch 1/3 [=====>    ] 40 images/s" | head -c 6291456
      echo "last line of the training log"
    else
      : > "$out/best.safetensors"
    fi;;
  predict)
    value=0.49
    case $args in
      *" --device cuda "*" --no-tf32 "*) value=0.490001;;
      *" --device cuda "*) value=0.51; [ "${FAIL_PREDICT_TF32:-0}" = 1 ] && value=0.9;;
    esac
    mkdir -p "$out"
    python3 -c 'import struct, sys
header = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 2), }"
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack("<4f", *[float(sys.argv[2])] * 4))' "$out/ISIC_1_probs.npy" "$value";;
esac
"""

# ncu: with --csv a kernel duration table (tools/ncu_step_summary.py reads it), else (the full
# sections) one profiled kernel's header line and duration; each call's arguments go to
# $NCU_ARGS.
NCU = r"""#!/bin/bash
echo "$*" >> "$NCU_ARGS"
case " $* " in
  *" --csv "*)
    echo '"ID","Kernel Name","Grid Size","gpu__time_duration.sum"'
    echo '"","","","usecond"'
    for i in 0 1 2; do echo "\"$i\",\"map_rows_kernel\",\"(1, 8, 1)\",\"4.5\""; done;;
  *) echo "  void unetcu::cuda::detail::map_rows_kernel<Normalize<4>>(T1) (1, 8, 1)x(256, 1, 1), Context 1"
     echo "    Section: GPU Speed Of Light Throughput"
     echo "    Duration                         us         4.50";;
esac
"""

CTEST = r"""#!/bin/sh
if [ -n "${PHASE_SECONDS:-}" ]; then sleep "$PHASE_SECONDS"; fi
echo '100% tests passed, 0 tests failed out of 1'
"""


class DeviceCheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="unetcu-device-check-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.marker = "unetcu-leftover-" + os.path.basename(self.tmp)
        self.addCleanup(subprocess.run, ["pkill", "-KILL", "-f", self.marker],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bin_dir = os.path.join(self.tmp, "bin")
        self.build = os.path.join(self.tmp, "build")
        self.out = os.path.join(self.tmp, "out")
        self.script(os.path.join(bin_dir, "cmake"), "#!/bin/sh\necho \"cmake $*\"\n")
        self.script(os.path.join(bin_dir, "ctest"), CTEST)
        # A GPU only with STAND_IN_GPU=1.
        self.script(os.path.join(bin_dir, "nvidia-smi"),
                    "#!/bin/sh\n[ \"${STAND_IN_GPU:-0}\" = 1 ] || exit 1\n"
                    "echo 'NVIDIA Stand-in, 580.0'\n")
        self.script(os.path.join(bin_dir, "compute-sanitizer"), SANITIZER)
        self.script(os.path.join(bin_dir, "ncu"), NCU)
        for path in ("tests/emu/unetcu_cuda_tests", "tests/backend/unetcu_backend_cuda_tests"):
            self.script(os.path.join(self.build, path), TESTS)
        self.script(os.path.join(self.build, "bench", "bench_cuda_ops"), BENCH)
        self.script(os.path.join(self.build, "unetcu"), UNETCU)
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                        UNETCU_DEVICE_BUILD=self.build, MARKER=self.marker,
                        NCU_ARGS=os.path.join(self.tmp, "ncu_args"),
                        UNETCU_CHECK_PACK="1", UNETCU_CHECK_SANITIZE="*x*",
                        UNETCU_CHECK_BUDGET="60")

    @staticmethod
    def script(path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def check(self, stop_at=None, **env):
        """The check's output (stdout and stderr); with `stop_at` (a log's name), a TERM to the
        check's process group once that phase has begun, as an outer timeout sends it, and the
        seconds from then to the check's end."""
        proc = subprocess.Popen(["bash", CHECK, self.out], cwd=ROOT, env=dict(self.env, **env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        if stop_at is None:
            return proc.communicate(timeout=300)[0], None
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(self.out, stop_at)) and proc.poll() is None:
            self.assertLess(time.monotonic(), deadline, f"{stop_at} never began")
            time.sleep(0.1)
        time.sleep(1)
        stopped = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
        return output, time.monotonic() - stopped

    def row(self, output, label):
        """The table's row that starts with `label` (the last such line)."""
        rows = [line for line in output.splitlines() if line.startswith(label)]
        self.assertTrue(rows, f"no row {label!r} in:\n{output}")
        return rows[-1]

    def packed(self):
        """The names in OUTDIR, and those in its logs.tar.gz."""
        with tarfile.open(os.path.join(self.out, "logs.tar.gz")) as tar:
            names = {os.path.normpath(n) for n in tar.getnames()}
        return sorted(os.listdir(self.out)), names

    def leftovers(self):
        found = subprocess.run(["pgrep", "-f", self.marker], stdout=subprocess.PIPE, text=True)
        return found.stdout.split()

    def test_rows_name_what_failed_and_the_logs_are_packed(self):
        output, _ = self.check(FAIL_TESTS="1")
        self.assertIn("FAILED", self.row(output, "kernel tests *x*"))
        self.assertIn("test_x.cpp:12: ERROR: CHECK( a == b ) is NOT correct!",
                      self.row(output, "kernel tests *x*"))
        self.assertIn("ERROR SUMMARY: 0 errors", self.row(output, "compute-sanitizer memcheck"))
        race = self.row(output, "compute-sanitizer racecheck")
        self.assertIn("FAILED", race)
        self.assertIn("exit 9; Error: Race reported between Write access", race)
        self.assertNotIn("COMPUTE-SANITIZER", race)
        self.assertIn("skipped  the runtime refuses it", self.row(output,
                                                                "compute-sanitizer synccheck"))
        step = self.row(output, "cpu-vs-gpu step ")
        self.assertIn("FAILED", step)
        self.assertIn("test_x.cpp:12: ERROR: CHECK( a == b )", step)
        listed, packed = self.packed()
        self.assertEqual(listed, ["logs.tar.gz", "summary.txt"])
        for log in ("sanitize_racecheck.log", "step_check.log", "kernel_tests_native.log"):
            self.assertIn(log, packed)
        with open(os.path.join(self.out, "summary.txt")) as f:
            self.assertIn("compute-sanitizer racecheck", f.read())

    def test_a_tool_out_of_time_says_so_and_leaves_nothing_running(self):
        # The budget (20 s) cuts racecheck's 150 s.
        output, _ = self.check(UNETCU_CHECK_RACECHECK="*hang*", UNETCU_CHECK_BUDGET="20")
        race = self.row(output, "compute-sanitizer racecheck *hang*")
        self.assertIn("FAILED", race)
        self.assertIn("out of time", race)
        self.assertIn("nothing reported", race)
        # The budget is spent: the next tools are not run, and not called failures.
        cut = self.row(output, "not run")
        self.assertIn("the budget spent before", cut)
        self.assertIn("compute-sanitizer initcheck", cut)
        self.assertNotIn("compute-sanitizer initcheck", output.split("not run")[0])
        self.assertEqual(self.leftovers(), [])

    def labels(self, output):
        """The table's row labels in order (the rows after its title line), each cut to the
        26 characters of its column."""
        table = output[output.rindex("unetcu device check ("):].splitlines()[1:]
        labels = []
        for line in table:
            if not line.strip():
                break
            labels.append(line[:26].strip())
        return labels

    def test_the_full_check_runs_what_every_run_must_bring_first(self):
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", UNETCU_CHECK_BUDGET="120")
        labels = self.labels(output)
        order = ["ctest (cuda kernels)", "cpu-vs-gpu step", "gpu ops vs LibTorch",
                 "step timeline (cupti)", "pytorch step",
                 "step, side streams chained", "step timeline, side chained",
                 "cpu-vs-gpu step, 4-wave wgrad", "step, 4-wave wgrad",
                 "step timeline, 4-wave wgrad", "step, cuDNN knob variants",
                 "cpu-vs-gpu step, cuDNN knob variants",
                 "cpu-vs-gpu step, BN passes last first", "step, BN passes last first",
                 "step, top 32 cuDNN configs", "cpu-vs-gpu step, GEMM convolutions always",
                 "step, serial schedule", "chained launches off"]
        for label in order:
            self.assertIn(label[:26], labels, output)
        positions = [labels.index(label[:26]) for label in order]
        self.assertEqual(positions, sorted(positions), output)
        # The tools asked for come after what every run must bring, before what is new.
        output, _ = self.check(UNETCU_CHECK_BUDGET="120")
        labels = self.labels(output)
        self.assertLess(labels.index("step profile (ncu)"), labels.index("kernel tests *x*"))
        self.assertLess(labels.index("compute-sanitizer initcheck"[:26]),
                        labels.index("cpu-vs-gpu step, 4-wave wgrad"[:26]))
        for label in ("ctest (cuda kernels)", "cpu-vs-gpu step", "gpu ops vs LibTorch",
                      "step timeline (cupti)", "step, serial schedule"):
            self.assertIn(" ok ", self.row(output, label + " "), output)
        self.assertIn("4323 images/s", self.row(output, "gpu train step b16 128px"))
        self.assertNotIn("not run", labels)
        # The opt-in plans' checks say at how many shapes such a plan served (each shape once).
        self.assertIn("shapes a knob variant serves: 1",
                      self.row(output, "cpu-vs-gpu step, cuDNN knob variants"))
        self.assertIn("shapes a carved-out plan serves: 0",
                      self.row(output, "cpu-vs-gpu step, wgrad on 112 SMs"[:26]))
        # And the plain steps at how many shapes our kernels served (the rows of the A/B
        # settings that add none say the same).
        self.assertIn("shapes our kernels serve: 1", self.row(output, "cpu-vs-gpu step "))

    def test_a_tight_budget_cuts_the_last_of_the_check_not_the_first(self):
        # Every test binary and benchmark takes 2 s: what must come first takes about 10 s,
        # the whole check over 100.
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", UNETCU_CHECK_BUDGET="30",
                               PHASE_SECONDS="2")
        for label in ("ctest (cuda kernels)", "cpu-vs-gpu step", "gpu ops vs LibTorch",
                      "step timeline (cupti)"):
            self.assertIn(" ok ", self.row(output, label + " "), output)
        cut = self.row(output, "not run")
        for label in ("step, serial schedule", "chained launches off", "graph API off"):
            self.assertIn(label, cut)
        self.assertNotIn("FAILED", output[output.rindex("unetcu device check ("):], output)

    def test_training_and_predict_on_a_gpu(self):
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", STAND_IN_GPU="1")
        for mode in ("tf32", "fp32"):
            train = self.row(output, f"train b16 128px {mode}")
            self.assertIn(" ok ", train)
            self.assertIn("4035 images/s (epoch 3), train loss 0.5, epoch 1 took 2.5 s", train)
            report = self.row(output, f"train report.html {mode}")
            self.assertIn(" ok ", report)
            self.assertIn("2 test images in its gallery", report)
        self.assertIn("serve 1 of 1, 0 disagree: forward 16x128x128x16 -> 16 3x3 (tensor-core):"
                      " 0.0281 vs 0.0464 ms", self.row(output, "direct convs vs cuDNN, tf32"))
        # Inference against the CPU with fp32 and with TF32 convolutions, each to its bound.
        predict = self.row(output, "predict --device cuda ")
        self.assertIn(" ok ", predict)
        self.assertIn("1 images; probabilities vs CPU: max |diff| 9.83e-07 (bound 0.001); "
                      "masks differ in 0 of 4 pixels", predict)
        predict = self.row(output, "predict --device cuda, tf32")
        self.assertIn(" ok ", predict)
        self.assertIn("max |diff| 2.00e-02 (bound 0.1); masks differ in 4 of 4 pixels", predict)
        self.assertIn("skipped  bench_cudnn_fusion not built",
                      self.row(output, "BatchNorm-fusion probe"))
        # The default step tuned as training tunes it, its report in a row of its own.
        self.assertNotIn("untuned", self.row(output, "gpu train step b16 128px"))
        self.assertIn("kept: side streams chained", self.row(output, "step tuning"))
        labels = self.labels(output)
        # TF32 among what every run must bring, fp32 among what earlier runs measured.
        self.assertLess(labels.index("train b16 128px tf32"), labels.index("gpu ops vs LibTorch"))
        self.assertLess(labels.index("BatchNorm backward (ncu)"),
                        labels.index("train b16 128px fp32"))
        self.assertLess(labels.index("train b16 128px fp32"),
                        labels.index("cpu-vs-gpu step, GEMM convolutions always"[:26]))
        # Nsight Compute: the step's profile, then the BatchNorms' sections by their template
        # arguments (the demangled names), then their passes last rows first.
        self.assertIn(" ok ", self.row(output, "step profile (ncu)"))
        for label, regex in (("BatchNorm forward (ncu)", "StatsSrc|StatsEpilogue|Normalize<"),
                             ("BatchNorm backward (ncu)", "GradSrc|GradEpilogue|GradApply<"),
                             ("BN fwd last first (ncu)", "Normalize<"),
                             ("BN bwd last first (ncu)", "GradApply<")):
            self.assertIn("ok       ", self.row(output, label))
            self.assertIn(f"1 kernels matching '{regex}'", self.row(output, label))
        for label in ("BN fwd last first (ncu)", "BN bwd last first (ncu)"):
            self.assertIn("(with UNETCU_BN_PASS_LAST_FIRST=1)", self.row(output, label))
        # Then the loss's two kernels by their function names.
        self.assertIn("1 kernels matching 'loss_parts_kernel|loss_totals_kernel'",
                      self.row(output, "Dice + counts (ncu)"))
        self.assertLess(labels.index("BN bwd last first (ncu)"),
                        labels.index("Dice + counts (ncu)"))
        # Each kernel's line in the summary (tools/ncu_sections_summary.py), under its row's.
        with open(os.path.join(self.out, "summary.txt")) as f:
            summary = f.read()
        kernel = "map_rows_kernel<Normalize<4>> (1, 8, 1)x(256, 1, 1): 4.50 us\n"
        for title in ("Nsight Compute sections, ncu_bn_forward.log:\n",
                      "Nsight Compute sections, ncu_bn_backward_last_first.log "
                      "(with UNETCU_BN_PASS_LAST_FIRST=1):\n"):
            self.assertIn(title + kernel, summary)
        with open(os.path.join(self.tmp, "ncu_args")) as f:
            calls = f.read().splitlines()
        detail = [c for c in calls if "--kernel-name-base demangled" in c]
        self.assertEqual(len(detail), 4, calls)
        self.assertTrue(all(" -c 6 " in c and "--profile-steps 1" in c for c in detail[:2]), calls)
        self.assertTrue(all(" -c 2 " in c for c in detail[2:]), calls)
        loss = [c for c in calls if "regex:loss_parts_kernel|loss_totals_kernel" in c]
        self.assertEqual(len(loss), 1, calls)
        self.assertIn("--kernel-name-base function -k", loss[0])
        self.assertIn(" -c 2 ", loss[0])

    def test_inference_past_its_bound_fails_its_row(self):
        # And a run that could not write its page (training itself went on) fails that row.
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", STAND_IN_GPU="1",
                               FAIL_PREDICT_TF32="1", FAIL_REPORT="1", UNETCU_CHECK_BUDGET="20")
        self.assertIn(" ok ", self.row(output, "predict --device cuda "))
        predict = self.row(output, "predict --device cuda, tf32")
        self.assertIn("FAILED", predict)
        self.assertIn("max |diff| 4.10e-01 (bound 0.1)", predict)
        self.assertIn(" ok ", self.row(output, "train b16 128px tf32"))
        report = self.row(output, "train report.html tf32")
        self.assertIn("FAILED", report)
        self.assertIn("report.html not written: cannot encode a 128x128 PNG", report)

    def test_a_failed_training_is_tried_again_without_the_graph_api(self):
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", STAND_IN_GPU="1", FAIL_TRAIN="1")
        self.assertIn("FAILED   ", self.row(output, "train b16 128px tf32"))
        self.assertIn("see train-tf32.log", self.row(output, "train b16 128px tf32"))
        self.assertIn("ok       4035 images/s (epoch 3)",
                      self.row(output, "train tf32, graph API off"))
        self.assertNotIn("predict --device cuda", self.labels(output))

    def test_a_quick_ab_times_its_settings_and_nothing_else(self):
        output, _ = self.check(UNETCU_CHECK_SANITIZE="", UNETCU_CHECK_AB="default;UNETCU_X=1",
                               UNETCU_CHECK_AB_ROUNDS="2", UNETCU_CHECK_AB_VERIFY="1",
                               UNETCU_CHECK_AB_TIMELINE="1")
        labels = self.labels(output)
        self.assertEqual([label for label in labels if label.startswith("A/B")],
                         ["A/B 1: default", "A/B 1: UNETCU_X=1", "A/B 2: default",
                          "A/B 2: UNETCU_X=1"])
        self.assertIn("4323 images/s", self.row(output, "A/B 2: UNETCU_X=1"))
        # Each setting measured as it names it: the step untuned.
        for label in ("A/B 1: default", "A/B 2: UNETCU_X=1"):
            self.assertIn("(untuned)", self.row(output, label))
        self.assertIn(" ok ", self.row(output, "cpu-vs-gpu step "))
        # The timelines after the rounds, a setting each.
        self.assertEqual([label for label in labels if label.startswith("timeline:")],
                         ["timeline: default", "timeline: UNETCU_X=1"])
        self.assertGreater(labels.index("timeline: default"), labels.index("A/B 2: UNETCU_X=1"))
        for label in ("timeline: default", "timeline: UNETCU_X=1"):
            self.assertIn("compute gaps, other lanes only", self.row(output, label))
        for label in ("ctest (cuda kernels)", "gpu ops vs LibTorch", "step, serial schedule",
                      "not run"):
            self.assertNotIn(label, labels)

    def test_only_the_sanitizer_tools_asked_for_run(self):
        output, _ = self.check(UNETCU_CHECK_SANITIZE_TOOLS="racecheck initcheck")
        labels = self.labels(output)
        self.assertIn("kernel tests *x*", labels)
        self.assertIn("FAILED", self.row(output, "compute-sanitizer racecheck"))
        self.assertIn("ok", self.row(output, "compute-sanitizer initcheck"))
        for tool in ("memcheck", "synccheck"):
            self.assertNotIn(f"compute-sanitizer {tool}", labels)

    def test_the_pack_leaves_out_weights_and_data_and_cuts_long_logs(self):
        self.check(UNETCU_CHECK_SANITIZE="", STAND_IN_GPU="1", BIG_OUTPUT="1")
        listed, packed = self.packed()
        self.assertEqual(listed, ["logs.tar.gz", "summary.txt"])
        self.assertIn("train-tf32/metrics.jsonl", packed)
        self.assertNotIn("train-tf32/best.safetensors", packed)
        with tarfile.open(os.path.join(self.out, "logs.tar.gz")) as tar:
            files = {os.path.normpath(m.name): m for m in tar.getmembers() if m.isfile()}
            left = tar.extractfile(files["pack_left_out.txt"]).read().decode()
            log = tar.extractfile(files["train-tf32.log"]).read()
        self.assertIn("synth-data/images/ISIC_1.jpg 0 (generated data)", left)
        self.assertIn("train-tf32/best.safetensors 5242880", left)
        self.assertFalse([n for n in files if n.startswith("synth-data")])
        self.assertTrue(log.startswith(b"first line of the training log"))
        self.assertTrue(log.endswith(b"last line of the training log\n"))
        size = 31 + 6291456 + 30  # the stand-in's first line, its progress, its last line
        self.assertIn(f"[... {size - 2097152} bytes of {size} cut by the pack ...]".encode(), log)
        self.assertLess(len(log), 2 * 1048576 + 100)
        with open(os.path.join(self.out, "summary.txt")) as f:
            self.assertRegex(f.read(), r"logs.tar.gz: \d+ files whole, [1-9]\d* cut to their"
                             r" first and last 1 MiB, [1-9]\d* left out")

    def test_a_stopped_check_prints_its_table_and_packs_at_once(self):
        output, seconds = self.check(stop_at="sanitize_racecheck.log",
                                     UNETCU_CHECK_RACECHECK="*hang*")
        self.assertIn("by a signal after", self.row(output, "stopped"))
        self.assertIn("ok", self.row(output, "compute-sanitizer memcheck"))
        self.assertLess(seconds, 30)  # racecheck's phase had 150 s; the stop did not wait
        listed, packed = self.packed()
        self.assertIn("logs.tar.gz", listed)
        self.assertIn("sanitize_memcheck.log", packed)


if __name__ == "__main__":
    unittest.main()
