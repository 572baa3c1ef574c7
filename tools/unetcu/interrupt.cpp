// tools/unetcu/interrupt.cpp: see interrupt.h.
#include "tools/unetcu/interrupt.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include "engine/error.h"

namespace unetcu::cli {
namespace {

volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_previous[2];
constexpr int kSignals[2] = {SIGINT, SIGTERM};

void on_signal(int sig) {
  g_signal = sig;
  // Only async-signal-safe calls here: write(2), not stdio.
  static const char text[] =
      "\nstopping after the step in flight, then saving (press Ctrl-C again to quit now)\n";
  ssize_t ignored = write(STDERR_FILENO, text, sizeof text - 1);
  (void)ignored;
}

}  // namespace

StopRequests::StopRequests() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESETHAND: the default action is back for the next signal, so a second Ctrl-C quits.
  // SA_RESTART: a system call the signal interrupts (a checkpoint's write, a wait for a batch)
  // goes on rather than failing with EINTR.
  sa.sa_flags = SA_RESETHAND | SA_RESTART;
  for (int i = 0; i < 2; ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
}

StopRequests::~StopRequests() {
  for (int i = 0; i < 2; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

bool StopRequests::requested() { return g_signal != 0; }
int StopRequests::signal_number() { return int(g_signal); }

void StopRequests::test_hook(long steps_done) {
  static const long after = [] {
    const char* v = std::getenv("UNETCU_TEST_INTERRUPT_AFTER_STEPS");
    if (v == nullptr || *v == '\0') return -1L;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 1)
      fail("UNETCU_TEST_INTERRUPT_AFTER_STEPS must be a whole number of steps from 1, got '",
           v, "'");
    return n;
  }();
  if (after > 0 && steps_done == after) std::raise(SIGINT);
}

}  // namespace unetcu::cli
