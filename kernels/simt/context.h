// kernels/simt/context.h: execution contexts (fibers) for the SIMT emulator: a stack plus the
// saved registers of code suspended on it, and a switch between two contexts on one OS thread.
//
// On x86-64 the switch is a few instructions of assembly (callee-saved registers and the stack
// pointer; the floating-point control state is shared by all fibers and not switched). Elsewhere,
// or with UNETCU_SIMT_UCONTEXT defined, it falls back to ucontext, measured about 11x slower
// because swapcontext makes a system call. Under AddressSanitizer every switch is announced with
// __sanitizer_start/finish_switch_fiber so ASan knows which stack is live.
#pragma once

#include <cstddef>

#if !defined(__x86_64__) && !defined(UNETCU_SIMT_UCONTEXT)
#define UNETCU_SIMT_UCONTEXT 1
#endif
#if defined(UNETCU_SIMT_UCONTEXT)
#include <ucontext.h>
#else
// Pushes the callee-saved registers, stores the stack pointer in *save_sp, loads load_sp and pops
// the registers saved there (context.cpp).
extern "C" void unetcu_simt_swap(void** save_sp, void* load_sp);
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNETCU_SIMT_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif

namespace unetcu {
namespace simt {
namespace detail {

class Context {
 public:
  // The OS thread's own stack: the context a worker runs its scheduling code on.
  Context();
  // A fresh stack of `stack_bytes` (plus a guard page below it); the first switch to it calls
  // entry(arg), which must never return. `color` shifts the stack top by a few cache lines so that
  // the hot tops of many fiber stacks do not all map to the same cache sets.
  Context(void (*entry)(void*), void* arg, size_t stack_bytes, unsigned color);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

#if !defined(UNETCU_SIMT_UCONTEXT)
  // Asks for the cache lines a switch to this context will pop.
  void prefetch() const {
    __builtin_prefetch(sp_);
    __builtin_prefetch(static_cast<const char*>(sp_) + 64);
    __builtin_prefetch(static_cast<const char*>(sp_) + 128);
  }
#else
  void prefetch() const {}
#endif

  // Suspends the caller into `from` and resumes `to`; returns when something switches back.
  // Inline: it is the emulator's hottest call, and every frame it adds is stack each fiber
  // touches per switch.
  static void switch_to(Context& from, Context& to) {
#if defined(UNETCU_SIMT_ASAN)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, to.stack_low_, to.stack_bytes_);
#endif
#if defined(UNETCU_SIMT_UCONTEXT)
    swapcontext(&from.uc_, &to.uc_);
#else
    unetcu_simt_swap(&from.sp_, to.sp_);
#endif
#if defined(UNETCU_SIMT_ASAN)
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  }

 private:
  static void start(Context* self);  // first code run on a fresh stack

  void (*entry_)(void*) = nullptr;
  void* arg_ = nullptr;
  void* mapping_ = nullptr;  // the mmap'ed region (guard page + stack), null for an OS stack
  size_t mapping_bytes_ = 0;
  const void* stack_low_ = nullptr;  // usable stack [stack_low_, stack_low_ + stack_bytes_)
  size_t stack_bytes_ = 0;
#if defined(UNETCU_SIMT_UCONTEXT)
  ucontext_t uc_;
  static void ucontext_start(unsigned high, unsigned low);
#else
  void* sp_ = nullptr;
#endif
};

}  // namespace detail
}  // namespace simt
}  // namespace unetcu
