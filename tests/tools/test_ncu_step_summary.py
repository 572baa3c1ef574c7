#!/usr/bin/env python3
"""tools/ncu_step_summary.py on made-up Nsight Compute output: both CSV layouts ncu writes
(the default 'details' page, one row per kernel and metric, and '--page raw', one row per
kernel with a units row), the unit scaling, the ==PROF== lines mixed in, and the family
labels. The GPU machine runs the real thing; this checks the parsing and the sums here."""
import unittest

from tool_test import ToolTest
import ncu_step_summary as summary  # noqa: E402  (tool_test puts tools/ on the path)

OURS = ("void unetcu::cuda::detail::map_rows_kernel<unetcu::cuda::(anonymous namespace)::"
        "Normalize<4>>(T1, unetcu::cuda::detail::RowTiling)")
FPROP = "sm90_xmma_fprop_implicit_gemm_tf32f32_nhwc_kernel"
WGRAD = "sm90_xmma_wgrad_indexed_implicit_gemm_tf32f32_nhwc_kernel"
HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"')


def details_row(i, name, unit, value, grid="(1, 512, 1)"):
    return (f'"{i}","7","bench","h","{name}","1","7","(256, 1, 1)","{grid}","0","9.0",'
            f'"Command line profiler metrics","gpu__time_duration.sum","{unit}","{value}"')


class ParseTest(ToolTest):

    def test_details_page_with_units_and_noise(self):
        path = self.write("\n".join([
            "==PROF== Connected to process 7",
            "profiled 2 training steps",
            HEADER,
            details_row(0, OURS, "usecond", "4.5"),
            details_row(1, FPROP, "nsecond", "3,000"),
            details_row(2, OURS, "usecond", "5.5", grid="(2, 512, 1)"),
            details_row(3, WGRAD, "msecond", "0.002"),
        ]) + "\n")
        rows = summary.read_rows(path)
        self.assertEqual([r[2] for r in rows], [4500.0, 3000.0, 5500.0, 2000.0])
        self.assertEqual(rows[2][1], "(2,512,1)")

    def test_raw_page_units_row(self):
        path = self.write("\n".join([
            '"ID","Kernel Name","Grid Size","gpu__time_duration.sum"',
            '"","","","usecond"',
            f'"0","{FPROP}","(8, 8, 1)","12.5"',
            f'"1","{OURS}","(1, 1024, 1)","2"',
        ]) + "\n")
        self.assertEqual([r[2] for r in summary.read_rows(path)], [12500.0, 2000.0])

    def test_unknown_unit_and_missing_column_fail(self):
        bad_unit = self.write(HEADER + "\n" + details_row(0, OURS, "furlong", "1") + "\n")
        with self.assertRaises(SystemExit):
            summary.read_rows(bad_unit)
        no_name = self.write('"ID","Duration"\n"0","1"\n')
        with self.assertRaises(SystemExit):
            summary.read_rows(no_name)

    def test_families(self):
        self.assertEqual(summary.family(OURS), "map_rows_kernel<Normalize<4>>")
        self.assertEqual(summary.family(FPROP), "cuDNN fprop")
        self.assertEqual(summary.family(WGRAD), "cuDNN wgrad")
        self.assertTrue(summary.family("void nhwcAddPaddingKernel<float>(int)").startswith("other: "))

    def test_report_per_step(self):
        path = self.write("\n".join([HEADER] + [
            details_row(i, name, "usecond", value)
            for i, (name, value) in enumerate([(OURS, "4"), (FPROP, "6"), (OURS, "4"),
                                               (FPROP, "6")])]) + "\n")
        text = self.run_main(summary.main, ["ncu_step_summary.py", path, "2"])
        # 4 kernels over 2 steps: 2 a step, 20 us of kernel time in all, 0.010 ms a step.
        self.assertIn("2 kernels and 0.010 ms of kernel time per step", text)
        fprop_line = next(line for line in text.splitlines() if line.startswith("cuDNN fprop"))
        self.assertEqual(fprop_line.split()[-4:], ["1.0", "0.006", "60.0%", "6.00"])


if __name__ == "__main__":
    unittest.main()
