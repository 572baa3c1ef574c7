// kernels/simt/context.cpp: fiber stacks and the context switch (see context.h).
#include "kernels/simt/context.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(UNETCU_SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#if !defined(UNETCU_SIMT_UCONTEXT)
// unetcu_simt_swap (declared in context.h): only the callee-saved registers are switched;
// everything else is caller-saved under the System V ABI, so the compiler has already spilled
// it around the call.
// unetcu_simt_trampoline: where a fresh stack "returns" to; calls r12(r13) on an aligned stack.
asm(R"(
    .text
    .p2align 4
    .globl unetcu_simt_swap
    .hidden unetcu_simt_swap
    .type unetcu_simt_swap, @function
unetcu_simt_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size unetcu_simt_swap, .-unetcu_simt_swap

    .p2align 4
    .globl unetcu_simt_trampoline
    .hidden unetcu_simt_trampoline
    .type unetcu_simt_trampoline, @function
unetcu_simt_trampoline:
    movq %r13, %rdi
    andq $-16, %rsp
    callq *%r12
    ud2
    .size unetcu_simt_trampoline, .-unetcu_simt_trampoline
)");
extern "C" void unetcu_simt_trampoline();
#endif

namespace unetcu {
namespace simt {
namespace detail {

Context::Context() {
  // ASan must be told the bounds of the stack a switch returns to, the OS stack included.
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* low = nullptr;
    size_t bytes = 0;
    if (pthread_attr_getstack(&attr, &low, &bytes) == 0) {
      stack_low_ = low;
      stack_bytes_ = bytes;
    }
    pthread_attr_destroy(&attr);
  }
}

Context::Context(void (*entry)(void*), void* arg, size_t stack_bytes, unsigned color)
    : entry_(entry), arg_(arg) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  stack_bytes = (stack_bytes + page - 1) / page * page;
  mapping_bytes_ = stack_bytes + page;
  mapping_ = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mapping_ == MAP_FAILED) {
    std::fprintf(stderr, "unetcu simt: cannot map a %zu-byte fiber stack\n", mapping_bytes_);
    std::abort();
  }
  // The guard page turns a fiber stack overflow into a segfault instead of silent corruption.
  mprotect(mapping_, page, PROT_NONE);
  stack_low_ = static_cast<char*>(mapping_) + page;
  stack_bytes_ = stack_bytes;

  const uintptr_t top =
      (reinterpret_cast<uintptr_t>(stack_low_) + stack_bytes - (color % 64) * 64) & ~uintptr_t{15};
#if defined(UNETCU_SIMT_UCONTEXT)
  getcontext(&uc_);
  uc_.uc_stack.ss_sp = const_cast<void*>(stack_low_);
  uc_.uc_stack.ss_size = top - reinterpret_cast<uintptr_t>(stack_low_);
  uc_.uc_link = nullptr;
  const uintptr_t self = reinterpret_cast<uintptr_t>(this);
  makecontext(&uc_, reinterpret_cast<void (*)()>(&Context::ucontext_start), 2,
              static_cast<unsigned>(self >> 32), static_cast<unsigned>(self & 0xffffffffu));
#else
  // The frame unetcu_simt_swap pops: r15 r14 r13 r12 rbx rbp, then the return address.
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // keeps the return slot 16-byte aligned like a real call frame
  *--sp = reinterpret_cast<void*>(&unetcu_simt_trampoline);
  *--sp = nullptr;  // rbp = 0 ends frame-pointer unwinding here
  *--sp = nullptr;  // rbx
  *--sp = reinterpret_cast<void*>(&Context::start);  // r12: called by the trampoline
  *--sp = this;                                       // r13: its argument
  *--sp = nullptr;  // r14
  *--sp = nullptr;  // r15
  sp_ = sp;
#endif
}

Context::~Context() {
  if (mapping_ == nullptr) return;
#if defined(UNETCU_SIMT_ASAN)
  // Frames that never returned (a fiber parked in its loop) leave poisoned shadow behind; the
  // next user of these pages must not inherit it.
  __asan_unpoison_memory_region(mapping_, mapping_bytes_);
#endif
  munmap(mapping_, mapping_bytes_);
}

void Context::start(Context* self) {
#if defined(UNETCU_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  self->entry_(self->arg_);
  std::fprintf(stderr, "unetcu simt: a fiber entry function returned\n");
  std::abort();
}

#if defined(UNETCU_SIMT_UCONTEXT)
void Context::ucontext_start(unsigned high, unsigned low) {
  start(reinterpret_cast<Context*>((static_cast<uintptr_t>(high) << 32) | low));
}
#endif

}  // namespace detail
}  // namespace simt
}  // namespace unetcu
