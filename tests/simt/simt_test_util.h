// tests/simt/simt_test_util.h: helpers for the emulator tests: device arrays, running a faulty
// kernel in a child process, and running a launch under both schedules.
#pragma once

#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/simt/control.h"

namespace simt_test {

// Device memory of n elements of T (poisoned by cudaMalloc until written).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    UNETCU_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), n * sizeof(T)));
  }
  explicit DeviceArray(const std::vector<T>& values) : DeviceArray(values.size()) {
    UNETCU_CUDA_CHECK(
        cudaMemcpy(data_, values.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return data_; }
  size_t size() const { return n_; }
  std::vector<T> read() const {
    std::vector<T> out(n_);
    UNETCU_CUDA_CHECK(cudaMemcpy(out.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  T* data_ = nullptr;
  size_t n_;
};

// Runs `body` in a forked child. Returns what the child wrote to stdout and stderr; *aborted
// tells whether it died of SIGABRT (the emulator's way of reporting a kernel bug).
inline std::string run_in_child(const std::function<void()>& body, bool* aborted) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    std::signal(SIGABRT, SIG_DFL);  // not the test framework's crash handler
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    body();
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buffer[4096];
  for (ssize_t got; (got = read(fds[0], buffer, sizeof(buffer))) > 0;) text.append(buffer, got);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  *aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
  return text;
}

// The bytes `launch` leaves in `out` under each schedule must be identical; returns them.
template <typename T>
std::vector<T> run_both_schedules(const DeviceArray<T>& out, const std::function<void()>& launch,
                                  bool* identical) {
  unetcu::simt::set_schedule(unetcu::simt::Schedule::forward);
  launch();
  const std::vector<T> forward = out.read();
  unetcu::simt::set_schedule(unetcu::simt::Schedule::reverse);
  launch();
  const std::vector<T> reverse = out.read();
  unetcu::simt::set_schedule(unetcu::simt::Schedule::forward);
  *identical = std::memcmp(forward.data(), reverse.data(), forward.size() * sizeof(T)) == 0;
  return forward;
}

}  // namespace simt_test
