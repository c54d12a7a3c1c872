"""Unit tests of the benchmark's verdicts and figures (no servers needed)."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402


class SpanAccounting(unittest.TestCase):
    def test_every_span_received_or_counted_as_dropped_passes(self):
        self.assertEqual(bench.span_problems(66000, 0, 66000), [])
        self.assertEqual(bench.span_problems(64314, 1686, 66000), [])

    def test_a_span_lost_without_a_count_is_a_problem(self):
        self.assertEqual(len(bench.span_problems(65999, 0, 66000)), 1)
        self.assertEqual(len(bench.span_problems(66001, 0, 66000)), 1)

    def test_a_missing_report_is_a_problem_even_when_sampling(self):
        self.assertEqual(bench.span_problems(None, 0, 66000, sampled=True),
                         ["the receiver reported no totals"])

    def test_sampling_exports_fewer_by_design(self):
        self.assertEqual(bench.span_problems(6633, 0, 66000, sampled=True), [])


class Figures(unittest.TestCase):
    def test_percentiles_come_from_the_sorted_latencies(self):
        latencies = list(range(100, 0, -1))
        self.assertEqual(bench.percentile(latencies, 0.50), 51.0)
        self.assertEqual(bench.percentile(latencies, 0.99), 100.0)
        self.assertEqual(bench.percentile([], 0.99), 0.0)

    def test_h2load_throughput_line_parses(self):
        text = "finished in 1.61s, 12420.73 req/s, 546.04KB/s"
        self.assertEqual(bench._FINISHED_RE.search(text).group(1), "12420.73")

    def test_the_report_gives_ratios_between_medians(self):
        results = [bench.RunResult("bare", "0ms", i, rps=rps) for i, rps in enumerate((40000, 44000, 42000))]
        results += [bench.RunResult("full", "0ms", i, rps=rps) for i, rps in enumerate((10500, 10000, 9000))]
        shape = bench.Shape("0ms", 0, 4, 25, 1000)
        text = bench.report([shape], results, "none", ["bare", "full"])
        self.assertIn("full/bare 0.24", text)

    def test_the_serial_shape_reports_what_full_adds_over_off(self):
        results = [bench.RunResult("off", "serial", i, p50_us=p50, p99_us=p99)
                   for i, (p50, p99) in enumerate(((80, 170), (78, 160), (90, 400)))]
        results += [bench.RunResult("full", "serial", i, p50_us=p50, p99_us=p99)
                    for i, (p50, p99) in enumerate(((120, 1100), (124, 1000), (130, 1300)))]
        shape = bench.Shape("serial", 0, 1, 1, 1000)
        text = bench.report([shape], results, "none", ["off", "full"])
        self.assertIn("one call at a time: p50 44 µs, p99 930 µs", text)
        self.assertNotIn("ratios", text)


if __name__ == "__main__":
    unittest.main()
