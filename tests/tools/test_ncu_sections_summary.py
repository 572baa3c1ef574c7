#!/usr/bin/env python3
"""tools/ncu_sections_summary.py on made-up Nsight Compute text output (the layout of its full
sections: a header line per kernel, metric tables with and without units, rules whose text
wraps over indented lines, the profiler's own lines mixed in). The GPU machine runs the real
thing; this checks the parsing and the line each kernel gets."""
import unittest

from tool_test import ToolTest
import ncu_sections_summary as sections  # noqa: E402  (tool_test puts tools/ on the path)

PASS = ("void unetcu::cuda::detail::map_rows_kernel<unetcu::cuda::(anonymous namespace)::"
        "Normalize<4>, true>(T1, unetcu::cuda::detail::RowTiling)")
SUMS = ("void unetcu::cuda::detail::reduce_rows_partial_kernel<2, unetcu::cuda::"
        "(anonymous namespace)::StatsSrc<1>>(double *, T2, unetcu::cuda::detail::RowTiling)")

LOG = f"""==PROF== Connected to process 7 (bench_cuda_ops)
==PROF== Profiling "map_rows_kernel": 0%....50%....100% - 38 passes
profiled 1 training step
[7] bench_cuda_ops@127.0.0.1
  {PASS} (1, 1056, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    DRAM Frequency                  Ghz         2.62
    Elapsed Cycles                cycle       29,441
    Memory Throughput                 %        63.58
    DRAM Throughput                   %        61.20
    Duration                    usecond        16.83
    L2 Cache Throughput               %        40.93
    ----------------------- ----------- ------------

    OPT   This kernel exhibits low compute throughput and memory bandwidth utilization relative
          to the peak performance of this device.

    Section: Launch Statistics
    Block Size                                     256
    Registers Per Thread        register/thread     32
    Waves Per SM                                  1.00

    Section: Occupancy
    Theoretical Occupancy             %          100
    Achieved Occupancy                %        84.41

    Section: Warp State Statistics
    Warp Cycles Per Issued Instruction     cycle        25.60
    ---------------------------------- ----------- ------------

    OPT   Est. Speedup: 48.1%
          On average, each warp of this workload spends 12.3 cycles being stalled waiting for a
          scoreboard dependency on a L1TEX (local, global, surface, texture) operation. Find the
          instruction producing the data being waited upon. This stall type represents about
          48.1% of the total average of 25.6 cycles between issuing two instructions.
    ----- -----------------------------------------------------------------------------------
    INF   On average, each warp of this kernel spends 3.0 cycles being stalled waiting on a fixed
          latency execution dependency. This stall type represents about 11.7% of the total
          average of 25.6 cycles between issuing two instructions.

    Section: Memory Workload Analysis
    Memory Throughput           Tbyte/s         2.04
    Mem Busy                          %        40.90
    L1/TEX Hit Rate                   %            0
    L2 Hit Rate                       %        48.20

  {SUMS} (64, 1024, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    Duration                    msecond        0.006
    DRAM Throughput                   %        55.00
==PROF== Disconnected from process 7
"""


class SectionsTest(ToolTest):

    def test_a_line_per_kernel_with_the_memory_story(self):
        out = self.run_main(sections.main, ["ncu_sections_summary.py", self.write(LOG)])
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertEqual(
            lines[0],
            "map_rows_kernel<Normalize<4>, true> (1, 1056, 1)x(256, 1, 1): 16.83 us; "
            "DRAM 61.2% of peak; 2,040 GB/s; L2 hit 48.2%; L1 hit 0.0%; occupancy 84.4% of "
            "100%; 32 registers; 25.6 cycles an instruction; stalled waiting for a scoreboard "
            "dependency on a L1TEX (local, global, surface, texture) operation (48.1%)")
        # What the log lacks is left out; units scale (6 us from 0.006 ms).
        self.assertEqual(lines[1], "reduce_rows_partial_kernel<2, StatsSrc<1>> "
                                   "(64, 1024, 1)x(256, 1, 1): 6.00 us; DRAM 55.0% of peak")

    def test_a_metric_is_told_apart_by_its_unit(self):
        kernels = sections.read_kernels(self.write(LOG))
        # "Memory Throughput" twice: % (speed of light) and Tbyte/s (memory workload).
        self.assertEqual(sections.metric(kernels[0], "Memory Throughput", ("%",)), (63.58, "%"))
        self.assertEqual(sections.metric(kernels[0], "Memory Throughput", ("Tbyte/s",)),
                         (2.04, "Tbyte/s"))
        self.assertEqual(sections.metric(kernels[0], "Block Size"), (256.0, ""))
        self.assertEqual(len(kernels[0]["rules"]), 3)

    def test_a_log_without_kernels_fails(self):
        path = self.write("==PROF== No kernels were profiled.\n")
        with self.assertRaises(SystemExit) as stop:
            self.run_main(sections.main, ["ncu_sections_summary.py", path])
        self.assertEqual(stop.exception.code, 1)


if __name__ == "__main__":
    unittest.main()
