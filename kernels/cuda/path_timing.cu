// kernels/cuda/path_timing.cu: the process's path choices (kernels/path_timing.h,
// kernels/cuda/fastest_path.h): one per op and shape, made once, kept for the process.
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/env.h"
#include "kernels/cuda/fastest_path.h"

namespace unetcu::cuda {
namespace {

EnvSwitch g_path_timing{"UNETCU_PATH_TIMING", false};
std::atomic<PathCost> g_cost{nullptr};

struct Choices {
  std::mutex mutex;
  std::map<std::string, int> path;  // by op and shape
  std::vector<std::string> lines;   // the report, in the order timed
};
Choices& choices() {
  static Choices c;
  return c;
}

}  // namespace

void set_path_timing(bool on) { g_path_timing.set(on); }
bool path_timing() { return g_path_timing.get(); }

std::string path_timing_report() {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  std::string out;
  for (const std::string& line : c.lines) out += line + "\n";
  return out;
}

void forget_path_choices() {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.path.clear();
  c.lines.clear();
}

void set_path_cost_for_tests(PathCost cost) { g_cost.store(cost); }

namespace detail {

std::string PathOp::key() const {
  std::string out = std::string(op) + " ";
  for (int d = 0; d < dims; ++d) out += (d ? "x" : "") + std::to_string(shape[d]);
  return out;
}

int recorded_path(const std::string& key) {
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.path.find(key);
  return it == c.path.end() ? -1 : it->second;
}

int record_fastest(const std::string& key, const PathOp& op, const std::vector<double>& us) {
  int best = -1;
  for (int p = 0; p < op.paths; ++p)
    if (us[size_t(p)] >= 0.0 && (best < 0 || us[size_t(p)] < us[size_t(best)])) best = p;
  if (best < 0) return -1;
  std::string line = key + ": " + op.names[best] + " (";
  for (int p = 0; p < op.paths; ++p) {
    char figure[64];
    if (us[size_t(p)] >= 0.0)
      std::snprintf(figure, sizeof figure, "%.3f us", us[size_t(p)]);
    else
      std::snprintf(figure, sizeof figure, "not applicable");
    line += std::string(p ? ", " : "") + op.names[p] + " " + figure;
  }
  line += ")";
  Choices& c = choices();
  std::lock_guard<std::mutex> lock(c.mutex);
  // Two threads may time the same shape at once: the first record stands, and both run it.
  auto inserted = c.path.emplace(key, best);
  if (inserted.second) c.lines.push_back(line);
  return inserted.first->second;
}

double cost_for_tests(const std::string& key, const char* name) {
  const PathCost cost = g_cost.load();
  return cost ? cost(key, name) : -1.0;
}

bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;  // unknown: do not time
  }
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace detail
}  // namespace unetcu::cuda
