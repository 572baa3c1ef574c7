// tools/unetcu/interrupt.h: Ctrl-C (SIGINT) and SIGTERM during training. While a StopRequests
// lives, the first such signal only asks the training loop to stop at the next step boundary,
// so that it can save where it is (an epoch of HAM10000 takes some 25 minutes on a 2-core
// CPU: killing the process would lose it); the handler is reset by that signal, so a second
// one ends the process at once, as without it.
#pragma once

namespace unetcu::cli {

class StopRequests {
 public:
  StopRequests();   // installs the handlers
  ~StopRequests();  // puts back what was there
  StopRequests(const StopRequests&) = delete;
  StopRequests& operator=(const StopRequests&) = delete;

  // Whether a signal has asked to stop, and which (0: none).
  static bool requested();
  static int signal_number();

  // For tests (UNETCU_TEST_INTERRUPT_AFTER_STEPS=N): raises SIGINT, through the handler as a
  // Ctrl-C would, once `steps_done` reaches N. Reads the variable once.
  static void test_hook(long steps_done);
};

}  // namespace unetcu::cli
