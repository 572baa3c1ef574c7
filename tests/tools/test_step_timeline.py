#!/usr/bin/env python3
"""tools/step_timeline.py on a made-up CUPTI trace whose figures are worked out by hand: the
lanes by kernel family, busy and idle time, each lane's time alone, the compute lane's gaps
(GPU idle or other lanes only), head and tail, the concurrency shares, and the averaging over
steps. The GPU machine writes the real trace (bench_cuda_ops --trace-steps)."""
import unittest

from tool_test import ToolTest
import step_timeline as timeline  # noqa: E402  (tool_test puts tools/ on the path)

NORMALIZE = ("void unetcu::cuda::detail::map_rows_kernel<unetcu::cuda::(anonymous namespace)::"
             "Normalize<4>>(T1, unetcu::cuda::detail::RowTiling)")
DGRAD = "sm90_xmma_dgrad_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize128x128x32"
WGRAD = "sm90_xmma_wgrad_indexed_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc"
ADAM = "void unetcu::(anonymous namespace)::adam_update_kernel(float *, const float *)"
HEADER = "step,kind,start_ns,end_ns,stream,graph_node,grid,block,name"


US = 1000  # ns


def row(step, kind, start, end, name):
    """A record from `start` to `end` microseconds."""
    return f'{step},{kind},{start * US},{end * US},7,0,"(1,1,1)","(256,1,1)","{name}"'


# One step, offset by `t0` (times in us):
#   copy    [90, 95)      compute A [100, 110)   compute B [112, 120)
#   wgrad   [105, 130)    adam      [131, 135)
# span 45, busy 39 ([90,95) [100,130) [131,135)); compute busy 18, alone 5 ([100,105));
# wgrad busy 25, alone 12 ([110,112) [120,130)); one compute gap [110,112) during the wgrad
# kernel: 2 other-lanes-only, 0 idle; head 10, tail 15, from compute start 35; concurrency
# 0: 6, 1: 26, 2: 13.
def step_rows(step, t0):
    return [row(step, "memcpy", t0 + 90, t0 + 95, "HtoD 1024 B"),
            row(step, "kernel", t0 + 100, t0 + 110, NORMALIZE),
            row(step, "kernel", t0 + 112, t0 + 120, DGRAD),
            row(step, "kernel", t0 + 105, t0 + 130, WGRAD),
            row(step, "kernel", t0 + 131, t0 + 135, ADAM)]


class TimelineTest(ToolTest):

    def test_lanes_by_family(self):
        self.assertEqual(timeline.lane("kernel", NORMALIZE), "compute")
        self.assertEqual(timeline.lane("kernel", DGRAD), "compute")
        self.assertEqual(timeline.lane("kernel", WGRAD), "wgrad")
        self.assertEqual(timeline.lane("kernel", ADAM), "adam")
        self.assertEqual(timeline.lane("memcpy", "HtoD 1024 B"), "copy")
        bias = ("void unetcu::cuda::detail::reduce_rows_partial_kernel<1, unetcu::cuda::"
                "(anonymous namespace)::BiasGradSrc>(double *, T2, unetcu::cuda::detail::"
                "RowTiling)")
        self.assertEqual(timeline.lane("kernel", bias), "wgrad")

    def test_one_step_by_hand(self):
        steps = timeline.read(self.write([HEADER] + step_rows(0, 0)))
        figures, gaps = timeline.analyse(steps[0])
        want = {"span": 45, "busy": 39, "compute busy": 18, "compute alone": 5,
                "wgrad busy": 25, "wgrad alone": 12, "adam busy": 4, "adam alone": 4,
                "copy busy": 5, "copy alone": 5, "compute gaps, GPU idle": 0,
                "compute gaps, other lanes only": 2, "head before compute": 10,
                "tail after compute": 15, "from compute start": 35, "0 at once": 6,
                "1 at once": 26, "2 at once": 13, "3+ at once": 0}
        self.assertEqual(figures, {"kernels": 4, **{k: v * US for k, v in want.items()}})
        self.assertEqual(gaps, [(2 * US, 2 * US, 110 * US, 112 * US)])

    def test_interval_helpers(self):
        a = timeline.union([(0, 4), (2, 6), (10, 12), (20, 30)])
        self.assertEqual(a, [[0, 6], [10, 12], [20, 30]])
        self.assertEqual(timeline.length(a), 18)
        b = [[1, 2], [5, 11], [25, 40]]
        # [1,2) + [5,6) + [10,11) + [25,30): each list's intervals cross several of the other's.
        self.assertEqual(timeline.intersect(a, b), 8)
        self.assertEqual(timeline.intersect(b, a), 8)
        self.assertEqual(timeline.intersect(a, []), 0)
        # Four activities: three at once in [3, 4), four in [4, 5).
        acts = [(0, 5, "compute", "x"), (2, 6, "wgrad", "y"), (3, 8, "wgrad", "z"),
                (4, 5, "adam", "w")]
        self.assertEqual(timeline.concurrency(acts, 0, 10), [2, 4, 2, 2])

    def test_records_outside_steps_and_bad_rows(self):
        path = self.write([HEADER, row(-1, "kernel", 0, 50, NORMALIZE)] + step_rows(0, 1000))
        steps = timeline.read(path)
        self.assertEqual(list(steps), [0])
        self.assertEqual(len(steps[0]), 5)
        with self.assertRaises(SystemExit):
            timeline.read(self.write([HEADER, row(0, "kernel", 20, 10, NORMALIZE)]))
        with self.assertRaises(SystemExit):
            timeline.read(self.write(["step,kind,name", '0,kernel,"x"']))

    def test_main_averages_the_steps_after_the_first(self):
        # Step 0 is twice as long (a first launch); steps 1 and 2 are the step above.
        first = [row(0, "kernel", 0, 90, NORMALIZE)]
        path = self.write([HEADER] + first + step_rows(1, 1000) + step_rows(2, 2000))
        text = self.run_main(timeline.main, ["step_timeline.py", path])
        self.assertIn("3 traced steps, averaged over 2 (steps 1..2); 4 kernels a step", text)
        self.assertRegex(text, r"span\s+0\.045\s+100\.0%")
        self.assertRegex(text, r"busy\s+0\.039\s+86\.7%")
        self.assertRegex(text, r"compute gaps, other lanes only\s+0\.002\s+4\.4%")
        self.assertRegex(text, r"tail after compute\s+0\.015\s+33\.3%")
        # The last step's one gap: 2 us, all of it beside the weight gradient.
        self.assertRegex(text, r"\n\s+2\.0\s+2\.0  map_rows_kernel<Normalize<4>> -> cuDNN dgrad")
        # Which the compute lane waited under: the weight gradient, 2 us a step.
        self.assertRegex(text, r"waited under.*\n\s+2\.0  " + WGRAD + "\n")

    def test_waits_under_credits_each_overlap(self):
        # Gaps [10, 20) with other work and [30, 32) with none; kernels A over [5, 15),
        # B over [12, 40) (also across the idle-credited gap, which is skipped), and a
        # compute kernel, never credited.
        acts = [(0, 10, "compute", "c1"), (20, 30, "compute", "c2"), (32, 40, "compute", "c3"),
                (5, 15, "wgrad", "void a_kernel(float *)"), (12, 40, "wgrad", "b_kernel")]
        gaps = [(10, 10, 10, 20), (2, 0, 30, 32)]
        self.assertEqual(dict(timeline.waits_under(acts, gaps)), {"a_kernel": 5, "b_kernel": 8})
        self.assertEqual(timeline.kernel_label("void f<int>(int, float)"), "f<int>")
        self.assertEqual(timeline.kernel_label("void u::(anonymous namespace)::adam(float *)"),
                         "u::adam")


if __name__ == "__main__":
    unittest.main()
