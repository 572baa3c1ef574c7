// bench/bench_util.h: what every benchmark binary shares: the command-line sizes, the thread
// count for both engines, seeded random inputs, the check that our output agrees with the
// reference before anything is timed, the real shapes of the UNet's layers, the registration of
// compared pairs, and the table of ratios ours / LibTorch printed at the end of a run.
//
// Naming: a compared pair is two Google Benchmark runs "<key>/ours" and "<key>/libtorch"
// (e.g. "conv.fwd/encoder.layer1.0.conv1/ours"), so --benchmark_filter=conv.fwd selects a
// family. Each key is registered once as a PairInfo (shape, how often the network runs it, the
// work of one run in FLOP or bytes); the reporter records every run's time, and print_table()
// turns both into rows and per-family totals weighted by the count.
#pragma once

#include <benchmark/benchmark.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef UNETCU_WITH_TORCH
#include <ATen/Parallel.h>
#endif

#include "engine/rng.h"
#include "model/unet.h"

namespace unetcu::bench {

// ---- command line -------------------------------------------------------------------------

struct Options {
  int batch = 16, size = 128, threads = 0;
};

// Takes --batch N, --size S and --threads T out of argv (the rest is left for
// benchmark::Initialize) and sets the thread count of both engines: Debian's LibTorch lowers
// OpenMP to one thread when it loads, so it is set here explicitly, by default to the cores.
inline Options parse_options(int& argc, char** argv) {
  Options o;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--batch") && has_value)
      o.batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--size") && has_value)
      o.size = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads") && has_value)
      o.threads = std::atoi(argv[++i]);
    else
      argv[kept++] = argv[i];
  }
  argc = kept;
  if (o.batch < 1 || o.size < 32 || o.size % 32 != 0) {
    std::fprintf(stderr, "bench: --batch must be >= 1 and --size a positive multiple of 32\n");
    std::exit(2);
  }
  if (o.threads <= 0) o.threads = int(std::thread::hardware_concurrency());
  omp_set_num_threads(o.threads);
#ifdef UNETCU_WITH_TORCH
  at::set_num_threads(o.threads);
#endif
  return o;
}

// ---- inputs --------------------------------------------------------------------------------

inline std::vector<float> random_floats(size_t n, uint64_t seed, double lo = -1.0,
                                        double hi = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.uniform(lo, hi));
  return v;
}

inline std::vector<uint8_t> random_mask(size_t n, uint64_t seed, double p_one) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = rng.chance(p_one) ? 1 : 0;
  return v;
}

// ---- checking before timing ----------------------------------------------------------------

// The outcome of comparing one output with its reference. `worst` is the largest error in the
// units of the tolerance, so worst <= 1 passes.
struct Check {
  bool ok = true;
  double worst = 0;
  std::string detail;  // the failing output and its worst element, empty when ok
  bool threw = false;  // the case threw instead (detail: what it said)
};

// |got - want| <= tol * (rms(want) + |want|) for every element: the rms term covers outputs
// that cancel to near zero, whose absolute error still scales with the size of the terms
// (the rule the LibTorch comparison tests use). tol = 0 demands equality.
template <typename G, typename W>
Check compare(const G* got, const W* want, size_t n, double tol, const std::string& what) {
  double sum_sq = 0;
  for (size_t i = 0; i < n; ++i) sum_sq += double(want[i]) * double(want[i]);
  const double rms = n ? std::sqrt(sum_sq / double(n)) : 0.0;
  Check c;
  size_t worst_i = 0;
  for (size_t i = 0; i < n; ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    const double bound = tol * (rms + std::fabs(double(want[i])));
    const double scaled = err == 0 ? 0.0 : bound > 0 ? err / bound : INFINITY;
    if (std::isnan(err) || scaled > c.worst) {
      c.worst = std::isnan(err) ? INFINITY : scaled;
      worst_i = i;
      if (std::isnan(err)) break;
    }
  }
  c.ok = c.worst <= 1.0;
  if (!c.ok) {
    std::ostringstream os;
    os << what << ": element " << worst_i << " is " << double(got[worst_i]) << ", reference "
       << double(want[worst_i]) << " (tolerance " << tol << " x (rms " << rms << " + |ref|))";
    c.detail = os.str();
  }
  return c;
}

// Several outputs of one op: the first failure wins, `worst` is the largest over all.
inline Check combine(std::initializer_list<Check> checks) {
  Check all;
  for (const Check& c : checks) {
    all.worst = std::max(all.worst, c.worst);
    if (!c.ok && all.ok) {
      all.ok = false;
      all.detail = c.detail;
    }
  }
  return all;
}

// ---- the UNet's layers ---------------------------------------------------------------------

// One distinct shape of an op in the graph at the benchmark's batch and size: the first node
// that has it (its name stands for all) and how many nodes share it.
struct LayerShape {
  Node node;
  bool input_needs_grad = true;  // false for the stem conv: the image needs no gradient
  int count = 0;
};

// Every distinct shape of `op` in graph order.
inline std::vector<LayerShape> distinct_shapes(const Graph& g, OpKind op) {
  auto key = [&](const Node& n) {
    std::ostringstream os;
    switch (n.op) {
      case OpKind::conv:
        os << n.conv.n << ' ' << n.conv.h << ' ' << n.conv.w << ' ' << n.conv.c << ' ' << n.conv.k
           << ' ' << n.conv.r << ' ' << n.conv.s << ' ' << n.conv.stride << ' ' << n.conv.pad << ' '
           << (n.bias >= 0) << ' ' << (n.in0 != g.input());
        break;
      case OpKind::batchnorm: os << n.bn.rows << ' ' << n.bn.c; break;
      case OpKind::maxpool:
        os << n.pool.n << ' ' << n.pool.h << ' ' << n.pool.w << ' ' << n.pool.c;
        break;
      case OpKind::upsample: os << n.up.n << ' ' << n.up.h << ' ' << n.up.w << ' ' << n.up.c; break;
      case OpKind::concat: os << n.cat.rows << ' ' << n.cat.ca << ' ' << n.cat.cb; break;
      case OpKind::relu:
      case OpKind::add_relu: os << g.acts()[size_t(n.out)].numel(); break;
    }
    return os.str();
  };
  std::vector<LayerShape> out;
  std::vector<std::string> keys;
  for (const Node& n : g.nodes()) {
    if (n.op != op) continue;
    const std::string k = key(n);
    auto it = std::find(keys.begin(), keys.end(), k);
    if (it != keys.end()) {
      ++out[size_t(it - keys.begin())].count;
      continue;
    }
    keys.push_back(k);
    out.push_back({n, n.in0 != g.input(), 1});
  }
  return out;
}

// "16x32x32x64 -> 16x32x32x64 3x3/1" and the like, for the table.
inline std::string describe(const ConvShape& s) {
  std::ostringstream os;
  os << s.n << 'x' << s.h << 'x' << s.w << 'x' << s.c << " -> " << s.p << 'x' << s.q << 'x' << s.k
     << ' ' << s.r << 'x' << s.s << '/' << s.stride;
  return os.str();
}

// ---- timing table --------------------------------------------------------------------------

enum class Work { flop, bytes };

struct PairInfo {
  std::string key;    // "conv.fwd/encoder.layer1.0.conv1"
  std::string shape;  // human-readable shape
  int count = 1;      // how many times one training step runs it
  Work kind = Work::bytes;
  double work = 0;        // FLOP or bytes moved by one run
  bool in_totals = true;  // counted in the per-family totals (not so a whole training step)
  bool probe = false;     // another form of an op, timed beside the default one: in the
                          // bandwidth table (bench_cuda_ops), never in the family totals
  Check check;            // filled in when the pair is first run
  bool checked = false;
};

inline std::vector<PairInfo>& pairs() {
  static std::vector<PairInfo> all;
  return all;
}
inline PairInfo& pair(const std::string& key) {
  for (auto& p : pairs())
    if (p.key == key) return p;
  std::fprintf(stderr, "bench: no pair named %s\n", key.c_str());
  std::abort();
}

// The work counter of one run ("FLOP/s" or "B/s", a rate over the measured time).
inline void set_work_counter(benchmark::State& state, const PairInfo& p) {
  state.counters[p.kind == Work::flop ? "FLOP/s" : "B/s"] =
      benchmark::Counter(p.work, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- compared pairs ------------------------------------------------------------------------

// One op at one shape: the inputs of both engines, built when the pair's first benchmark runs
// and dropped when the next pair starts (ours and LibTorch run back to back), so only one
// case's buffers are alive at a time. check() runs both sides once and compares.
struct OpCase {
  virtual ~OpCase() = default;
  virtual void ours() = 0;
  virtual void torch() = 0;
  virtual Check check() = 0;
};
using Factory = std::function<std::unique_ptr<OpCase>()>;
// Times `run` (one run of one side) into `state`: a plain loop on the CPU, events on a GPU.
using Timer = std::function<void(benchmark::State&, const std::function<void()>&)>;

struct CurrentCase {
  std::string key;
  std::unique_ptr<OpCase> op;
};
inline CurrentCase& current_case() {
  static CurrentCase c;
  return c;
}

// Registers "<key>/ours" and, with `with_torch`, "<key>/libtorch". The first of them to run
// builds the case and checks it; a pair that disagrees, or whose case throws (an opt-in path
// the device refuses, say), is skipped with the reason, and the other pairs still run.
// `manual_time`: the timer reports each iteration's time itself (SetIterationTime) in one
// iteration, as the GPU timer does with its median of event-timed runs.
inline void register_pair(PairInfo info, Factory make, Timer timer, bool with_torch,
                          bool manual_time) {
  const std::string key = info.key;
  pairs().push_back(std::move(info));
  for (bool ours : {true, false}) {
    if (!ours && !with_torch) continue;
    auto body = [key, make, timer, ours](benchmark::State& state) {
      PairInfo& info = pair(key);
      CurrentCase& cur = current_case();
      try {
        if (cur.key != key) {
          cur.op.reset();
          cur.key.clear();
          cur.op = make();
          cur.key = key;
        }
        if (!info.checked) {
          info.check = cur.op->check();
          info.checked = true;
        }
      } catch (const std::exception& e) {
        info.check.ok = false;
        info.check.threw = true;
        info.check.detail = std::string("failed: ") + e.what();
        info.checked = true;
      }
      if (!info.check.ok) {
        state.SkipWithError(
            ((info.check.threw ? "" : "disagrees with the reference: ") + info.check.detail)
                .c_str());
        return;
      }
      OpCase* op = cur.op.get();
      try {
        if (ours)
          timer(state, [op] { op->ours(); });
        else
          timer(state, [op] { op->torch(); });
      } catch (const std::exception& e) {
        state.SkipWithError((std::string("failed: ") + e.what()).c_str());
        return;
      }
      set_work_counter(state, info);
    };
    auto* b = benchmark::RegisterBenchmark((key + (ours ? "/ours" : "/libtorch")).c_str(), body);
    b->Unit(benchmark::kMillisecond);
    if (manual_time)
      b->UseManualTime()->Iterations(1);
    else
      b->UseRealTime();
  }
}

// The GPU timer's counters (bench_cuda_ops): the host's median time to issue one run (ms), and
// 1 where the op was timed unheld because holding its stream failed (its issue waited for it).
constexpr const char* kIssueCounter = "issue_ms";
constexpr const char* kUnheldCounter = "unheld";

// Console output as usual, and each run's time per iteration (ms) by name: the median when
// repetitions are aggregated, the run itself otherwise; with the GPU timer's counters.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> ms;
  std::map<std::string, double> issue_ms;
  std::map<std::string, bool> unheld;

  // Colours only on a terminal: logs stay plain text.
  RecordingReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      const double to_ms = r.time_unit == benchmark::kMillisecond   ? 1.0
                           : r.time_unit == benchmark::kMicrosecond ? 1e-3
                           : r.time_unit == benchmark::kNanosecond  ? 1e-6
                                                                    : 1e3;
      if (r.run_type != Run::RT_Iteration && r.aggregate_name != "median") continue;
      const std::string& name = r.run_name.function_name;
      ms[name] = r.GetAdjustedRealTime() * to_ms;
      if (auto c = r.counters.find(kIssueCounter); c != r.counters.end())
        issue_ms[name] = c->second.value;
      if (auto c = r.counters.find(kUnheldCounter); c != r.counters.end())
        unheld[name] = c->second.value != 0;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

inline std::string rate_text(Work kind, double work, double ms) {
  char buf[32];
  if (ms <= 0 || work <= 0) return "-";
  const double per_s = work / (ms * 1e-3);
  std::snprintf(buf, sizeof buf, kind == Work::flop ? "%.1f GFLOP/s" : "%.1f GB/s", per_s * 1e-9);
  return buf;
}

// The final table: one row per pair that ran, then per family the time of one training
// step's worth of that family (each shape's time times its count) and the ratio of those.
// Returns false when any pair failed its check.
inline bool print_table(const RecordingReporter& rep, const char* title) {
  std::printf("\n%s\n", title);
  std::printf("%-52s %-34s %4s %10s %10s %7s %15s %15s %s\n", "op / first layer", "shape", "x",
              "ours ms", "torch ms", "ratio", "ours rate", "torch rate", "check");
  struct Family {
    double ours = 0, torch = 0;
  };
  std::map<std::string, Family> families;
  std::vector<std::string> family_order;
  bool all_ok = true;
  for (const PairInfo& p : pairs()) {
    if (!p.checked) continue;  // filtered out
    all_ok = all_ok && p.check.ok;
    auto o = rep.ms.find(p.key + "/ours"), t = rep.ms.find(p.key + "/libtorch");
    const double ours = o == rep.ms.end() ? 0 : o->second,
                 torch = t == rep.ms.end() ? 0 : t->second;
    char ratio[16] = "-", check[64];
    if (ours > 0 && torch > 0) std::snprintf(ratio, sizeof ratio, "%.3f", ours / torch);
    if (p.check.ok)
      std::snprintf(check, sizeof check, "ok (%.2f of tol)", p.check.worst);
    else
      std::snprintf(check, sizeof check, "FAILED");
    std::printf("%-52s %-34s %4d %10.3f %10.3f %7s %15s %15s %s\n", p.key.c_str(), p.shape.c_str(),
                p.count, ours, torch, ratio, rate_text(p.kind, p.work, ours).c_str(),
                rate_text(p.kind, p.work, torch).c_str(), check);
    if (!p.check.ok) std::printf("    %s\n", p.check.detail.c_str());
    if (ours > 0 && torch > 0 && p.in_totals) {
      const std::string fam = p.key.substr(0, p.key.find('/'));
      if (!families.count(fam)) family_order.push_back(fam);
      families[fam].ours += p.count * ours;
      families[fam].torch += p.count * torch;
    }
  }
  if (!family_order.empty()) {
    std::printf("\nper family, one training step's worth (time x count, summed over shapes)\n");
    std::printf("%-24s %12s %12s %7s\n", "family", "ours ms", "torch ms", "ratio");
    Family total;
    for (const auto& name : family_order) {
      const Family& f = families[name];
      std::printf("%-24s %12.2f %12.2f %7.3f\n", name.c_str(), f.ours, f.torch, f.ours / f.torch);
      total.ours += f.ours;
      total.torch += f.torch;
    }
    std::printf("%-24s %12.2f %12.2f %7.3f\n", "all", total.ours, total.torch,
                total.ours / total.torch);
  }
  if (!all_ok)
    std::printf("\nsome outputs disagree with the reference: their timings were not run\n");
  return all_ok;
}

// ---- the pairs of the op families both suites time ---------------------------------------------
// bench_cpu_ops and bench_cuda_ops build their own cases (their kernels, their peers) for the
// same pairs: the keys, shapes, counts, work and seeds come from here, so the two tables line up.
// Each for_each_* calls make(info, ...what the case needs..., seed) once per pair and returns
// the seed it reached, for a suite that registers more pairs after them.

enum class ConvDir { forward, backward_data, backward_filter };

// make(PairInfo, ConvShape, bool bias, ConvDir, uint64_t seed)
template <class Make>
uint64_t for_each_conv_pair(const Graph& g, Make make) {
  const struct {
    ConvDir dir;
    const char* name;
  } dirs[] = {{ConvDir::forward, "conv.fwd"},
              {ConvDir::backward_data, "conv.bwd_data"},
              {ConvDir::backward_filter, "conv.bwd_filter"}};
  uint64_t seed = 1000;
  for (const auto& d : dirs) {
    for (const LayerShape& ls : distinct_shapes(g, OpKind::conv)) {
      // The image needs no gradient: neither PyTorch nor our engine computes it.
      if (d.dir == ConvDir::backward_data && !ls.input_needs_grad) continue;
      const ConvShape sh = ls.node.conv;
      PairInfo p;
      p.key = std::string(d.name) + "/" + ls.node.name;
      p.shape = describe(sh);
      p.count = ls.count;
      p.kind = Work::flop;
      p.work = 2.0 * sh.n * sh.k * sh.c * sh.r * sh.s * sh.p * sh.q;
      make(p, sh, ls.node.bias >= 0, d.dir, seed += 10);
    }
  }
  return seed;
}

// "16x32x32x64", for the table.
inline std::string describe(const ActInfo& a) {
  return std::to_string(a.n) + "x" + std::to_string(a.h) + "x" + std::to_string(a.w) + "x" +
         std::to_string(a.c);
}

enum class BnOp { train_forward, backward, eval_forward };

// make(PairInfo, ActInfo, BnOp, uint64_t seed)
template <class Make>
uint64_t for_each_batchnorm_pair(const Graph& g, Make make) {
  const struct {
    BnOp op;
    const char* name;
    double bytes_per_value;
  } ops[] = {{BnOp::train_forward, "bn.train_fwd", 8},
             {BnOp::backward, "bn.bwd", 12},
             {BnOp::eval_forward, "bn.eval_fwd", 8}};
  uint64_t seed = 5000;
  for (const auto& o : ops) {
    for (const LayerShape& ls : distinct_shapes(g, OpKind::batchnorm)) {
      const ActInfo a = g.acts()[size_t(ls.node.out)];
      // One value per channel (a small --batch/--size): PyTorch refuses to train BatchNorm there.
      if (int64_t(a.n) * a.h * a.w < 2) continue;
      PairInfo p;
      p.key = std::string(o.name) + "/" + ls.node.name;
      p.shape = describe(a);
      p.count = ls.count;
      p.work = o.bytes_per_value * double(a.numel());
      make(p, a, o.op, seed += 10);
    }
  }
  return seed;
}

enum class EltOp { relu_forward, relu_backward, add_relu_forward };

// make(PairInfo, EltOp, int64_t values, uint64_t seed)
template <class Make>
uint64_t for_each_elementwise_pair(const Graph& g, Make make) {
  const struct {
    EltOp op;
    OpKind kind;
    const char* name;
    double bytes_per_value;
  } ops[] = {{EltOp::relu_forward, OpKind::relu, "relu.fwd", 8},
             {EltOp::relu_backward, OpKind::relu, "relu.bwd", 12},
             {EltOp::add_relu_forward, OpKind::add_relu, "add_relu.fwd", 12}};
  uint64_t seed = 7000;
  for (const auto& o : ops) {
    for (const LayerShape& ls : distinct_shapes(g, o.kind)) {
      const ActInfo a = g.acts()[size_t(ls.node.out)];
      PairInfo p;
      p.key = std::string(o.name) + "/" + (ls.node.name.empty() ? a.name : ls.node.name);
      p.shape = std::to_string(a.numel()) + " values";
      p.count = ls.count;
      p.work = o.bytes_per_value * double(a.numel());
      make(p, o.op, a.numel(), seed += 10);
    }
  }
  return seed;
}

}  // namespace unetcu::bench
