// kernels/simt/block.cpp: the SIMT emulator's block scheduler. Runs the CUDA threads of a block
// as fibers on one OS thread, implements __syncthreads and the warp collectives, detects
// deadlocks and divergent barriers, and hands the blocks of a grid to worker threads.
//
// Scheduling. Threads are numbered by their position in the schedule (forward: linear thread id,
// reverse: the opposite). A fiber runs its thread until it blocks or finishes, then passes control
// directly to the next runnable thread after it, cyclically; when a barrier or warp collective
// completes, control goes to the lowest-positioned thread it released, so every phase between two
// barriers runs strictly in schedule order. A stack belongs to a thread only while the thread is
// started and unfinished: a finishing fiber starts the next unstarted thread on its own stack, so
// a kernel without barriers costs one function call per thread, not one context switch.
#include "kernels/simt/simt.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/simt/context.h"
#include "kernels/simt/internal.h"

#if defined(UNETCU_SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#endif

// The built-in variables: each worker's fibers share them, and the scheduler rewrites them at
// every switch.
__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

namespace unetcu {
namespace simt {
namespace detail {

__thread unsigned char* dynamic_shared_base;
__thread uint64_t block_serial;

namespace {

#if defined(UNETCU_SIMT_ASAN)
constexpr size_t kStackBytes = 256 * 1024;  // ASan's redzones make frames several times larger
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr uint64_t kPoison = ~uint64_t{0};

// Static shared memory (UNETCU_STATIC_SHARED): what a kernel may declare on a GPU, and the
// emulator's arena for it. Each array starts 16-byte aligned and is followed by a redzone
// (poisoned under ASan, 0xFF otherwise), so reading or writing past its end shows.
constexpr size_t kStaticSharedBytes = 48 * 1024;
constexpr size_t kStaticRedzone = 64;
constexpr size_t kStaticArenaBytes = 2 * kStaticSharedBytes;

// ---- settings and counters --------------------------------------------------------------------

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || value[0] == '\0') return fallback;
  return std::atoi(value);
}

std::atomic<int> g_schedule{-1};  // -1: not read from the environment yet
std::atomic<int> g_workers{0};    // 0: not read from the environment yet

struct GlobalCounters {
  std::atomic<uint64_t> launches{0}, overlapping_launches{0}, blocks{0}, threads{0}, barriers{0},
      warp_collectives{0}, poisoned_reads{0};
};
GlobalCounters g_counters;

void add(std::atomic<uint64_t>& total, uint64_t& local) {
  if (local != 0) total.fetch_add(local, std::memory_order_relaxed);
  local = 0;
}

// ---- the block runner ---------------------------------------------------------------------------

enum class State : uint8_t { not_started, ready, waiting, done };

struct Fiber;
struct WarpGroup;

// One cache line each: a barrier touches every thread of the block.
struct alignas(64) Thread {
  Fiber* fiber;        // the stack it runs on, while started and not done
  WarpGroup* group;    // the collective it waits at
  uint64_t result;     // this lane's result of its last warp collective
  const char* file;    // where it waits, for reports
  uint3 idx;           // threadIdx
  int tid;             // linear thread index in the block
  int pos;             // position in the schedule
  int line;
  State state;
  bool at_barrier;     // waiting at __syncthreads (otherwise at a warp collective)
  bool waited;         // passed UNETCU_GRID_DEPENDENCY_SYNC (required in a chained launch)
};
static_assert(sizeof(Thread) == 64, "a Thread should fill one cache line");

// The lanes of one warp taking part in one collective with one mask, until all have arrived.
struct WarpGroup {
  Collective op;
  unsigned mask;
  unsigned arrived;
  const char* file;
  int line;
  WarpGroup* next;
  uint64_t value[32];
  int arg[32];
  uint8_t width[32];
};

struct Warp {
  unsigned live;      // lanes that exist and have not exited
  WarpGroup* groups;  // collectives still collecting lanes
};

class Runner;

struct Fiber {
  Fiber(Runner* r, unsigned color)
      : context(&fiber_main, this, kStackBytes, color), runner(r) {}
  static void fiber_main(void* fiber);

  Context context;
  Runner* runner;
  Thread* thread = nullptr;  // the thread to run (next) on this stack
  Fiber* next_free = nullptr;
};

const char* collective_name(Collective op) {
  switch (op) {
    case Collective::shfl_idx: return "__shfl_sync";
    case Collective::shfl_up: return "__shfl_up_sync";
    case Collective::shfl_down: return "__shfl_down_sync";
    case Collective::shfl_xor: return "__shfl_xor_sync";
    case Collective::ballot: return "__ballot_sync";
    case Collective::any: return "__any_sync";
    case Collective::all: return "__all_sync";
    case Collective::sync: return "__syncwarp";
    case Collective::reduce_add: return "__reduce_add_sync";
    case Collective::reduce_min: return "__reduce_min_sync";
    case Collective::reduce_max: return "__reduce_max_sync";
    case Collective::mma_tf32: return "mma.sync.m16n8k8.tf32";
  }
  return "warp collective";
}

bool is_shuffle(Collective op) {
  return op == Collective::shfl_idx || op == Collective::shfl_up || op == Collective::shfl_down ||
         op == Collective::shfl_xor;
}

std::string place(const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line);
}

bool same_place(const char* file_a, int line_a, const char* file_b, int line_b) {
  return line_a == line_b && (file_a == file_b || std::strcmp(file_a, file_b) == 0);
}

std::string xyz(const uint3& v) {
  std::ostringstream os;
  os << "(" << v.x << "," << v.y << "," << v.z << ")";
  return os.str();
}

// How a launch runs its blocks, for reports: " (cooperative)", " (clusters of 4 blocks)" or "".
std::string launch_kind(const KernelCall& call) {
  if (call.cooperative) return " (cooperative)";
  if (call.cluster != 0) return " (clusters of " + std::to_string(call.cluster) + " blocks)";
  return "";
}

// How far a barrier reaches: the block (__syncthreads), the block's cluster
// (UNETCU_CLUSTER_SYNC) or the whole grid of a cooperative launch (UNETCU_GRID_SYNC).
enum class Span : uint8_t { block, cluster, grid };

// The blocks of a launch that run at once, each on its own OS thread and Runner: the grid of a
// cooperative launch, or one cluster of a cluster launch (its clusters run one after another
// on the same threads, rank r of each on thread r). The group's barrier (UNETCU_GRID_SYNC,
// UNETCU_CLUSTER_SYNC): the last of a block's threads to reach it brings the block here, and
// its OS thread waits until every block of the group has come (its other threads wait at the
// block-level part). A block that finishes while others wait here would hang a GPU: it aborts
// with a report instead. The mutex also orders memory: what a block wrote before the barrier
// is visible to the group's blocks after it. For a cluster the group also knows each rank's
// dynamic shared memory, which UNETCU_CLUSTER_SHARED maps into.
class BlockGroup {
 public:
  BlockGroup(const KernelCall& call, unsigned blocks)
      : call_(call),
        blocks_(blocks),
        shared_(blocks, nullptr),
        finished_(new std::atomic<bool>[blocks]) {
    for (unsigned rank = 0; rank < blocks; ++rank) finished_[rank].store(false);
  }

  // Thread `rank` publishes its Runner's dynamic shared memory (the same for every cluster it
  // runs) and waits until every rank has: a block may map a peer's from its first statement.
  void join(unsigned rank, unsigned char* shared) {
    std::unique_lock<std::mutex> lock(mutex_);
    shared_[rank] = shared;
    if (++joined_ == blocks_) {
      wake_.notify_all();
      return;
    }
    wake_.wait(lock, [&] { return joined_ == blocks_; });
  }

  unsigned char* shared(unsigned rank) const { return shared_[rank]; }
  bool finished(unsigned rank) const { return finished_[rank].load(std::memory_order_acquire); }

  void arrive_and_wait(const std::string& who, const char* file, int line) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (exited_ != 0) {
      fail(who + " reached the " + barrier() + " at " + place(file, line) + " after " +
           exited_who_ + " had finished: " + rule());
    }
    if (arrived_ == 0) {
      file_ = file;
      line_ = line;
      first_ = who;
    } else if (!same_place(file, line, file_, line_)) {
      fail("divergent " + std::string(barrier()) + "s: " + who + " reached the one at " +
           place(file, line) + " while " + first_ + " waits at " + place(file_, line_));
    }
    const uint64_t generation = generation_;
    if (++arrived_ == blocks_) {
      arrived_ = 0;
      ++generation_;
      wake_.notify_all();
      return;
    }
    wake_.wait(lock, [&] { return generation_ != generation || exited_ != 0; });
    // An exit while we wait has been reported (and the process aborted) by the exiting block.
  }

  // Block `rank` has finished. Then waits until every block of the group has: the next
  // cluster starts afresh, and a block's shared memory stays while its cluster runs.
  void block_exited(unsigned rank, const std::string& who) {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_[rank].store(true, std::memory_order_release);
    if (exited_++ == 0) exited_who_ = who;
    if (arrived_ != 0) {
      fail(who + " finished while " + std::to_string(arrived_) + " block(s) wait at the " +
           barrier() + " at " + place(file_, line_) + " (e.g. " + first_ + "): " + rule());
    }
    if (exited_ == blocks_) {
      exited_ = 0;
      for (unsigned r = 0; r < blocks_; ++r) finished_[r].store(false, std::memory_order_relaxed);
      ++round_;
      wake_.notify_all();
      return;
    }
    const uint64_t round = round_;
    wake_.wait(lock, [&] { return round_ != round; });
  }

 private:
  bool cluster() const { return call_.cluster != 0; }
  const char* barrier() const { return cluster() ? "cluster barrier" : "grid barrier"; }
  const char* rule() const {
    return cluster() ? "every block of a cluster must reach each cluster barrier"
                     : "every block of a cooperative launch must reach each grid barrier";
  }

  [[noreturn, gnu::noinline, gnu::cold]] void fail(const std::string& what) const {
    std::ostringstream os;
    os << "unetcu simt: " << what << "\n  in kernel " << call_.name << " launched"
       << launch_kind(call_) << " at " << call_.file << ":" << call_.line << ", grid "
       << xyz(uint3{call_.grid.x, call_.grid.y, call_.grid.z}) << "\n";
    std::fputs(os.str().c_str(), stderr);
    std::fflush(stderr);
    std::abort();
  }

  const KernelCall& call_;
  const unsigned blocks_;
  std::vector<unsigned char*> shared_;
  std::unique_ptr<std::atomic<bool>[]> finished_;
  std::mutex mutex_;
  std::condition_variable wake_;
  unsigned joined_ = 0;
  uint64_t arrived_ = 0, generation_ = 0, exited_ = 0, round_ = 0;
  const char* file_ = "";
  int line_ = 0;
  std::string first_, exited_who_;
};

// One per OS thread that runs blocks; all state of the block being run lives here.
class Runner {
 public:
  Runner() {
    void* buffer = nullptr;
    if (posix_memalign(&buffer, 128, kMaxSharedBytes) != 0) {
      std::fprintf(stderr, "unetcu simt: cannot allocate dynamic shared memory\n");
      std::abort();
    }
    shared_ = static_cast<unsigned char*>(buffer);
    dynamic_shared_base = shared_;
    if (posix_memalign(&buffer, 128, kStaticArenaBytes) != 0) {
      std::fprintf(stderr, "unetcu simt: cannot allocate static shared memory\n");
      std::abort();
    }
    static_shared_ = static_cast<unsigned char*>(buffer);
#if defined(UNETCU_SIMT_ASAN)
    __asan_poison_memory_region(static_shared_, kStaticArenaBytes);
#endif
  }
  ~Runner() {
#if defined(UNETCU_SIMT_ASAN)
    __asan_unpoison_memory_region(shared_, kMaxSharedBytes);
    __asan_unpoison_memory_region(static_shared_, kStaticArenaBytes);
#endif
    std::free(shared_);
    std::free(static_shared_);
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  void run_block(const KernelCall& call, bool reverse, uint64_t block) {
    call_ = &call;
    reverse_ = reverse;
    const dim3 grid = call.grid, dims = call.block;
    blockIdx = uint3{static_cast<unsigned>(block % grid.x),
                     static_cast<unsigned>(block / grid.x % grid.y),
                     static_cast<unsigned>(block / (uint64_t{grid.x} * grid.y))};
    blockDim = dims;
    gridDim = grid;
    n_ = static_cast<int>(dims.x * dims.y * dims.z);
    done_ = 0;
    first_exited_ = nullptr;
    for (int tid = 0; tid < n_; ++tid) {
      const int pos = reverse ? n_ - 1 - tid : tid;
      Thread& t = threads_[pos];
      t.state = State::not_started;
      t.at_barrier = false;
      t.waited = false;
      t.pos = pos;
      t.tid = tid;
      t.idx = uint3{tid % dims.x, tid / dims.x % dims.y, tid / (dims.x * dims.y)};
      t.fiber = nullptr;
      t.group = nullptr;
    }
    const int n_warps = (n_ + 31) / 32;
    for (int w = 0; w < n_warps; ++w) {
      const int lanes = n_ - w * 32 < 32 ? n_ - w * 32 : 32;
      warps_[w].live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
      warps_[w].groups = nullptr;
    }
    barrier_arrived_ = 0;

    // A new block: every static shared array is placed afresh when first declared, with
    // poison in it, as a GPU gives a block shared memory with whatever was there.
    ++block_serial;
#if defined(UNETCU_SIMT_ASAN)
    __asan_poison_memory_region(static_shared_, static_used_);
#endif
    static_used_ = 0;
    static_declared_ = 0;

    if (call.shared_bytes > 0) {
#if defined(UNETCU_SIMT_ASAN)
      __asan_unpoison_memory_region(shared_, call.shared_bytes);
#endif
      std::memset(shared_, 0xFF, call.shared_bytes);
    }
#if defined(UNETCU_SIMT_ASAN)
    // Reading or writing past the launch's dynamic shared memory is an ASan report.
    __asan_poison_memory_region(shared_ + call.shared_bytes, kMaxSharedBytes - call.shared_bytes);
#endif

    Fiber* fiber = take_fiber();
    assign(fiber, &threads_[0]);
    in_block_ = true;
    Context::switch_to(os_context_, fiber->context);
    in_block_ = false;
    ++blocks_;
    threads_run_ += static_cast<uint64_t>(n_);
  }

  // True while a block runs on this thread: a launch now would come from inside a kernel.
  bool in_block() const { return in_block_; }

  void flush_counters() {
    add(g_counters.blocks, blocks_);
    add(g_counters.threads, threads_run_);
    add(g_counters.barriers, barriers_);
    add(g_counters.warp_collectives, collectives_);
    add(g_counters.poisoned_reads, poisoned_);
  }

  // The blocks running at once with this thread's (a cooperative grid or a cluster) and this
  // block's rank among them, or null.
  void set_group(BlockGroup* group, unsigned rank) {
    group_ = group;
    rank_ = rank;
  }

  // This thread's dynamic shared memory, the same for every block it runs.
  unsigned char* shared() const { return shared_; }

  // detail::static_shared's first call for `site` in this block: the array's place in the
  // arena, after the block's earlier arrays and their redzones.
  void* place_static_shared(StaticSharedSite& site, size_t bytes, size_t align,
                            const char* name, const char* file, int line) {
    align = align < 16 ? 16 : align;
    const size_t declared = (static_declared_ + align - 1) / align * align + bytes;
    if (declared > kStaticSharedBytes) {
      report_static_shared(name, bytes, declared, "the 48 KB of static shared memory a kernel "
                           "may declare", file, line);
    }
    if (declared + call_->shared_bytes > kMaxSharedBytes) {
      report_static_shared(name, bytes, declared, "with the launch's " +
                           std::to_string(call_->shared_bytes) + " bytes of dynamic shared "
                           "memory, the 227 KB a block may have", file, line);
    }
    const size_t offset = (static_used_ + align - 1) / align * align;
    if (offset + bytes + kStaticRedzone > kStaticArenaBytes) {
      report_static_shared(name, bytes, declared, "the emulator's room for static arrays and "
                           "their redzones (fewer, larger arrays fit)", file, line);
    }
    unsigned char* at = static_shared_ + offset;
#if defined(UNETCU_SIMT_ASAN)
    __asan_unpoison_memory_region(at, bytes);
    std::memset(at, 0xFF, bytes);
#else
    std::memset(at, 0xFF, bytes + kStaticRedzone);
#endif
    static_declared_ = declared;
    static_used_ = offset + bytes + kStaticRedzone;
    site.block = block_serial;
    site.address = at;
    return at;
  }

#if defined(UNETCU_SIMT_ASAN)
  // After a block of a cluster: a peer reading its shared memory now, which a GPU does not
  // allow, is an ASan report (the next block unpoisons what it uses).
  void poison_shared() { __asan_poison_memory_region(shared_, kMaxSharedBytes); }
#endif

  // `span` cluster or grid: UNETCU_CLUSTER_SYNC or UNETCU_GRID_SYNC, a __syncthreads whose
  // completion also waits for every block of the cluster or grid.
  int sync_block(int predicate, const char* file, int line, Span span = Span::block) {
    Thread* t = current_;
    if (span != Span::block) check_group_barrier(t, span, file, line);
    if (first_exited_ != nullptr) report_barrier_after_exit(t, file, line);
    if (barrier_arrived_ == 0) {
      barrier_file_ = file;
      barrier_line_ = line;
      barrier_first_ = t;
      barrier_count_[barrier_generation_ & 1] = 0;
    } else if (!same_place(file, line, barrier_file_, barrier_line_)) {
      report_divergent_barrier(t, file, line);
    }
    const uint64_t generation = barrier_generation_;
    barrier_count_[generation & 1] += predicate;
    if (++barrier_arrived_ < n_) {
      t->state = State::waiting;
      t->at_barrier = true;
      t->file = file;
      t->line = line;
      block(t);
    } else {
      if (span != Span::block) group_->arrive_and_wait("block " + xyz(blockIdx), file, line);
      barrier_arrived_ = 0;
      ++barrier_generation_;
      ++barriers_;
      for (int pos = 0; pos < n_; ++pos) {
        threads_[pos].state = State::ready;
        threads_[pos].at_barrier = false;
      }
      resume_first(t, &threads_[0]);
    }
    return barrier_count_[generation & 1];
  }

  uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width,
                           const char* file, int line) {
    Thread* t = current_;
    const int lane = t->tid & 31;
    Warp& warp = warps_[t->tid >> 5];
    if ((mask & (1u << lane)) == 0) report_lane_outside_mask(t, op, mask, file, line);
    if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1)) != 0)) {
      report_bad_width(op, width, file, line);
    }
    WarpGroup* group = warp.groups;
    while (group != nullptr && group->mask != mask) group = group->next;
    if (group == nullptr) {
      group = take_group();
      group->op = op;
      group->mask = mask;
      group->arrived = 0;
      group->file = file;
      group->line = line;
      group->next = warp.groups;
      warp.groups = group;
    } else if (group->op != op) {
      report_divergent_collective(t, op, group, file, line);
    }
    group->arrived |= 1u << lane;
    group->value[lane] = value;
    group->arg[lane] = arg;
    group->width[lane] = static_cast<uint8_t>(width);
    if (group->arrived != (mask & warp.live)) {
      t->state = State::waiting;
      t->group = group;
      t->file = file;
      t->line = line;
      block(t);
    } else {
      resume_first(t, complete(warp, t->tid >> 5, group));
    }
    return t->result;
  }

  unsigned active_mask() const { return warps_[current_->tid >> 5].live; }

  void dependency_sync() { current_->waited = true; }

  unsigned cluster_rank(const char* file, int line) const {
    if (call_->cluster == 0) report_not_cluster(current_, "asked for its cluster rank", file, line);
    return rank_;
  }

  void* map_shared_rank(const void* p, unsigned rank, const char* file, int line) const {
    const Thread* t = current_;
    if (call_->cluster == 0) {
      report_not_cluster(t, "mapped shared memory to another block", file, line);
    }
    if (rank >= call_->cluster) report_rank_outside_cluster(t, rank, file, line);
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    const uintptr_t base = reinterpret_cast<uintptr_t>(shared_);
    // One past the end is a pointer into the memory too, as the end of a loop over it.
    if (address < base || address - base > call_->shared_bytes) {
      report_map_outside_shared(t, p, file, line);
    }
    if (group_->finished(rank)) report_map_finished(t, rank, file, line);
    return group_->shared(rank) + (address - base);
  }

  [[noreturn, gnu::noinline, gnu::cold]] void trap(const char* file, int line) {
    fatal(describe(current_) + " executed __trap() at " + place(file, line));
  }

 private:
  friend struct Fiber;

  [[noreturn]] void fiber_loop(Fiber* fiber) {
    for (;;) {
      Thread* t = fiber->thread;
      enter(t);
      call_->invoke(call_->closure.get());
      finish(t, fiber);
    }
  }

  void enter(Thread* t) {
    current_ = t;
    threadIdx = t->idx;
  }

  void assign(Fiber* fiber, Thread* t) {
    fiber->thread = t;
    t->fiber = fiber;
    t->state = State::ready;
  }

  Fiber* take_fiber() {
    if (free_fibers_ != nullptr) {
      Fiber* fiber = free_fibers_;
      free_fibers_ = fiber->next_free;
      return fiber;
    }
    fibers_.push_back(std::make_unique<Fiber>(this, static_cast<unsigned>(fibers_.size())));
    return fibers_.back().get();
  }

  void release_fiber(Fiber* fiber) {
    fiber->next_free = free_fibers_;
    free_fibers_ = fiber;
  }

  WarpGroup* take_group() {
    if (free_groups_ != nullptr) {
      WarpGroup* group = free_groups_;
      free_groups_ = group->next;
      return group;
    }
    groups_.push_back(std::make_unique<WarpGroup>());
    return groups_.back().get();
  }

  // The next thread after `pos` in schedule order that can run, or null.
  Thread* next_after(int pos) {
    for (int i = pos + 1; i < n_; ++i) {
      if (threads_[i].state == State::ready || threads_[i].state == State::not_started) {
        return &threads_[i];
      }
    }
    for (int i = 0; i <= pos; ++i) {
      if (threads_[i].state == State::ready || threads_[i].state == State::not_started) {
        return &threads_[i];
      }
    }
    return nullptr;
  }

  // Leaves `from`'s stack for thread `to`, starting `to` on a free stack if it has none.
  void switch_to_thread(Fiber* from, Thread* to) {
    Fiber* target = to->fiber;
    if (to->state == State::not_started) {
      target = take_fiber();
      assign(target, to);
    }
    // Threads mostly run in schedule order: start fetching the stack of the one after `to`, so
    // the next switch finds it in cache.
    if (to->pos + 1 < n_) {
      const Fiber* after = threads_[to->pos + 1].fiber;
      if (after != nullptr) after->context.prefetch();
    }
    Context::switch_to(from->context, target->context);
  }

  // `t` waits: run the next runnable thread until something makes `t` ready and resumes it.
  void block(Thread* t) {
    Thread* next = next_after(t->pos);
    if (next == nullptr) deadlock();
    switch_to_thread(t->fiber, next);
    enter(t);
  }

  // `t` completed a barrier or collective that released `first` and others: run from `first`.
  void resume_first(Thread* t, Thread* first) {
    if (first == t) return;
    switch_to_thread(t->fiber, first);
    enter(t);
  }

  void finish(Thread* t, Fiber* fiber) {
    t->state = State::done;
    t->fiber = nullptr;
    ++done_;
    if (first_exited_ == nullptr) first_exited_ = t;
    if (barrier_arrived_ > 0) report_exit_during_barrier(t);
    if (call_->chained && !t->waited) report_exit_without_dependency_sync(t);
    // An exited lane no longer holds up its warp's collectives.
    const int w = t->tid >> 5;
    Warp& warp = warps_[w];
    warp.live &= ~(1u << (t->tid & 31));
    for (WarpGroup* group = warp.groups; group != nullptr;) {
      WarpGroup* next = group->next;
      if (group->arrived == (group->mask & warp.live)) complete(warp, w, group);
      group = next;
    }

    if (done_ == n_) {
      release_fiber(fiber);
      Context::switch_to(fiber->context, os_context_);
      return;
    }
    Thread* next = next_after(t->pos);
    if (next == nullptr) deadlock();
    if (next->state == State::not_started) {
      assign(fiber, next);
      return;
    }
    release_fiber(fiber);
    Context::switch_to(fiber->context, next->fiber->context);
  }

  // Computes every participant's result (PTX shfl.sync / vote.sync / redux.sync rules), marks
  // the waiting lanes ready, recycles the group, and returns the lowest-positioned participant.
  Thread* complete(Warp& warp, int w, WarpGroup* group) {
    WarpGroup** link = &warp.groups;
    while (*link != group) link = &(*link)->next;
    *link = group->next;

    const unsigned arrived = group->arrived;
    uint64_t common = 0;
    switch (group->op) {
      case Collective::ballot:
      case Collective::any:
      case Collective::all:
        for (int lane = 0; lane < 32; ++lane) {
          if ((arrived >> lane & 1u) && group->value[lane] != 0) common |= uint64_t{1} << lane;
        }
        if (group->op == Collective::any) common = common != 0;
        if (group->op == Collective::all) common = common == arrived;
        break;
      case Collective::reduce_add:
      case Collective::reduce_min:
      case Collective::reduce_max:
        common = reduce(group->op, arrived, group->value, group->arg[__builtin_ctz(arrived)] != 0);
        break;
      case Collective::mma_tf32:
        // A lane that exited left the warp short: mma.sync needs all 32.
        if (arrived != 0xffffffffu) report_short_mma(w, group);
        mma_tf32(group->value);
        break;
      default:
        break;
    }

    Thread* first = nullptr;
    for (int lane = 0; lane < 32; ++lane) {
      if ((arrived >> lane & 1u) == 0) continue;
      Thread& t = thread_of(w * 32 + lane);
      t.result = is_shuffle(group->op) ? shuffle(group, lane) : common;
      if (t.state == State::waiting) {
        t.state = State::ready;
        t.group = nullptr;
      }
      if (first == nullptr || t.pos < first->pos) first = &t;
    }
    ++collectives_;
    group->next = free_groups_;
    free_groups_ = group;
    return first;
  }

  uint64_t shuffle(const WarpGroup* group, int lane) {
    const int width = group->width[lane];
    const int b = group->arg[lane] & 31;
    const int segmask = (32 - width) & 31;  // c[12:8]: the lane bits that select the segment
    const int cval = group->op == Collective::shfl_up ? 0 : 31;
    const int max_lane = (lane & segmask) | (cval & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool in_range = false;
    switch (group->op) {
      case Collective::shfl_up: j = lane - b; in_range = j >= max_lane; break;
      case Collective::shfl_down: j = lane + b; in_range = j <= max_lane; break;
      case Collective::shfl_xor: j = lane ^ b; in_range = j <= max_lane; break;
      default: j = min_lane | (b & ~segmask); in_range = j <= max_lane; break;
    }
    if (!in_range) j = lane;
    if ((group->arrived >> j & 1u) == 0) {
      ++poisoned_;
      return kPoison;
    }
    return group->value[j];
  }

  // Every lane's d of one m16n8k8 TF32 product; value[lane] points at the lane's MmaTf32Lane.
  static void mma_tf32(const uint64_t* value) {
    MmaTf32Lane* lane[32];
    for (int l = 0; l < 32; ++l) lane[l] = reinterpret_cast<MmaTf32Lane*>(value[l]);
    // The hardware reads an operand's sign, exponent and 10 mantissa bits only.
    auto tf32 = [](uint32_t bits) {
      float f;
      bits &= 0xffffe000u;
      std::memcpy(&f, &bits, sizeof f);
      return double(f);
    };
    double a[16][8], b[8][8];
    for (int l = 0; l < 32; ++l) {
      const int g = l >> 2, t = l & 3;
      a[g][t] = tf32(lane[l]->a[0]);
      a[g + 8][t] = tf32(lane[l]->a[1]);
      a[g][t + 4] = tf32(lane[l]->a[2]);
      a[g + 8][t + 4] = tf32(lane[l]->a[3]);
      b[t][g] = tf32(lane[l]->b[0]);
      b[t + 4][g] = tf32(lane[l]->b[1]);
    }
    for (int l = 0; l < 32; ++l) {
      const int g = l >> 2, t = l & 3;
      for (int i = 0; i < 4; ++i) {
        const int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
        double sum = lane[l]->c[i];
        for (int k = 0; k < 8; ++k) sum += a[row][k] * b[k][col];
        lane[l]->d[i] = float(sum);
      }
    }
  }

  static uint64_t reduce(Collective op, unsigned arrived, const uint64_t* value, bool is_signed) {
    int64_t acc = 0;
    bool first = true;
    for (int lane = 0; lane < 32; ++lane) {
      if ((arrived >> lane & 1u) == 0) continue;
      const uint32_t bits = static_cast<uint32_t>(value[lane]);
      const int64_t v = is_signed ? int64_t{static_cast<int32_t>(bits)} : int64_t{bits};
      if (first) {
        acc = v;
        first = false;
      } else if (op == Collective::reduce_add) {
        acc += v;
      } else if (op == Collective::reduce_min) {
        acc = v < acc ? v : acc;
      } else {
        acc = v > acc ? v : acc;
      }
    }
    return static_cast<uint32_t>(acc);
  }

  Thread& thread_of(int tid) { return threads_[reverse_ ? n_ - 1 - tid : tid]; }

  std::string describe(const Thread* t) const { return "thread " + xyz(t->idx); }

  [[noreturn, gnu::noinline, gnu::cold]] void report_static_shared(
      const char* name, size_t bytes, size_t declared, const std::string& limit,
      const char* file, int line) const {
    fatal(describe(current_) + " declared the static shared array " + name + " (" +
          std::to_string(bytes) + " bytes) at " + place(file, line) + ": the block's static "
          "arrays take " + std::to_string(declared) + " bytes, more than " + limit);
  }

  // The reports are out of line and cold: the hot paths keep small frames, so each fiber
  // touches fewer stack cache lines per switch.
  [[noreturn, gnu::noinline, gnu::cold]] void report_short_mma(int w,
                                                                const WarpGroup* group) const {
    std::ostringstream os;
    os << "warp " << w << " reached " << collective_name(group->op) << " at "
       << place(group->file, group->line) << " with lanes 0x" << std::hex << group->arrived
       << " only (a lane exited: the product needs all 32)";
    fatal(os.str());
  }
  [[noreturn, gnu::noinline, gnu::cold]] void report_barrier_after_exit(const Thread* t,
                                                                        const char* file,
                                                                        int line) const {
    fatal(describe(t) + " reached __syncthreads at " + place(file, line) + " after " +
          describe(first_exited_) +
          " exited: every thread of a block must reach each __syncthreads (an early return "
          "before a barrier?)");
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_exit_during_barrier(const Thread* t) const {
    std::ostringstream os;
    os << describe(t) << " exited while " << barrier_arrived_ << " thread(s) wait at "
       << "__syncthreads at " << place(barrier_file_, barrier_line_) << " (e.g. "
       << describe(barrier_first_)
       << "): every thread of a block must reach each __syncthreads (an early return before "
          "a barrier?)";
    fatal(os.str());
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_exit_without_dependency_sync(
      const Thread* t) const {
    fatal(describe(t) + " finished without UNETCU_GRID_DEPENDENCY_SYNC(): a kernel launched "
          "with UNETCU_LAUNCH_CHAINED may start before the previous kernel of its stream has "
          "finished, so every thread must wait there before it touches memory");
  }

  // Out of line: __syncthreads, the hot caller, does not need it.
  [[gnu::noinline]] void check_group_barrier(const Thread* t, Span span, const char* file,
                                             int line) const {
    if (span == Span::grid && !call_->cooperative) {
      fatal(describe(t) + " reached a grid barrier at " + place(file, line) +
            " in a kernel not launched with UNETCU_LAUNCH_COOPERATIVE (it would hang a GPU)" +
            (call_->cluster != 0 ? "; a cluster launch waits for its cluster with "
                                   "UNETCU_CLUSTER_SYNC"
                                 : ""));
    }
    if (span == Span::cluster && call_->cluster == 0) {
      report_not_cluster(t, "reached a cluster barrier", file, line);
    }
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_not_cluster(const Thread* t,
                                                                 const char* what,
                                                                 const char* file,
                                                                 int line) const {
    fatal(describe(t) + " " + what + " at " + place(file, line) +
          " in a kernel not launched with UNETCU_LAUNCH_CLUSTER: only the blocks of a cluster "
          "launch have a cluster");
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_rank_outside_cluster(const Thread* t,
                                                                          unsigned rank,
                                                                          const char* file,
                                                                          int line) const {
    fatal(describe(t) + " mapped shared memory to rank " + std::to_string(rank) + " at " +
          place(file, line) + ", but a cluster of this launch has " +
          std::to_string(call_->cluster) + " block(s), ranks 0 to " +
          std::to_string(call_->cluster - 1));
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_map_outside_shared(const Thread* t,
                                                                        const void* p,
                                                                        const char* file,
                                                                        int line) const {
    std::ostringstream os;
    os << describe(t) << " mapped address " << p << " to another block at " << place(file, line)
       << ", which is not in this block's dynamic shared memory (" << call_->shared_bytes
       << " bytes at " << static_cast<const void*>(shared_)
       << "): only dynamic shared memory (UNETCU_DYNAMIC_SHARED) can be mapped; a static "
          "__shared__ variable is thread_local here, with no place in the other blocks";
    fatal(os.str());
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_map_finished(const Thread* t,
                                                                  unsigned rank,
                                                                  const char* file,
                                                                  int line) const {
    fatal(describe(t) + " mapped the shared memory of rank " + std::to_string(rank) + " at " +
          place(file, line) + " after that block had finished: a block's shared memory goes "
          "with it, so end the kernel with UNETCU_CLUSTER_SYNC after the last read of another "
          "block's shared memory");
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_divergent_barrier(const Thread* t,
                                                                       const char* file,
                                                                       int line) const {
    fatal("divergent __syncthreads: " + describe(t) + " reached the barrier at " +
          place(file, line) + " while " + describe(barrier_first_) + " waits at " +
          place(barrier_file_, barrier_line_));
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_lane_outside_mask(const Thread* t,
                                                                       Collective op,
                                                                       unsigned mask,
                                                                       const char* file,
                                                                       int line) const {
    std::ostringstream os;
    os << describe(t) << " (lane " << (t->tid & 31) << ") called " << collective_name(op)
       << " at " << place(file, line) << " with mask 0x" << std::hex << mask
       << " that does not include its own lane";
    fatal(os.str());
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_bad_width(Collective op, int width,
                                                               const char* file,
                                                               int line) const {
    std::ostringstream os;
    os << collective_name(op) << " at " << place(file, line) << " with width " << width
       << ": the width must be a power of two from 1 to 32";
    fatal(os.str());
  }

  [[noreturn, gnu::noinline, gnu::cold]] void report_divergent_collective(
      const Thread* t, Collective op, const WarpGroup* group, const char* file, int line) const {
    std::ostringstream os;
    os << "divergent warp collectives: " << describe(t) << " called " << collective_name(op)
       << " at " << place(file, line) << " while lanes of its warp wait at "
       << collective_name(group->op) << " at " << place(group->file, group->line)
       << " with the same mask 0x" << std::hex << group->mask;
    fatal(os.str());
  }

  [[noreturn, gnu::noinline, gnu::cold]] void fatal(const std::string& what) const {
    std::ostringstream os;
    os << "unetcu simt: " << what << "\n  in kernel " << call_->name << " launched"
       << launch_kind(*call_) << " at " << call_->file << ":" << call_->line << ", block "
       << xyz(blockIdx) << " of grid " << xyz(uint3{gridDim.x, gridDim.y, gridDim.z})
       << ", block size " << xyz(uint3{blockDim.x, blockDim.y, blockDim.z}) << ", schedule "
       << (reverse_ ? "reverse" : "forward") << "\n";
    std::fputs(os.str().c_str(), stderr);
    std::fflush(stderr);
    std::abort();
  }

  // Nothing can run and not every thread has finished: say where each one waits.
  [[noreturn, gnu::noinline, gnu::cold]] void deadlock() const {
    std::map<std::string, std::pair<int, const Thread*>> waits;
    int exited = 0;
    for (int pos = 0; pos < n_; ++pos) {
      const Thread& t = threads_[pos];
      if (t.state == State::done) {
        ++exited;
        continue;
      }
      std::ostringstream where;
      if (t.at_barrier) {
        where << "__syncthreads at " << place(t.file, t.line);
      } else {
        where << collective_name(t.group->op) << " (mask 0x" << std::hex << t.group->mask
              << std::dec << ") at " << place(t.file, t.line);
      }
      auto& entry = waits[where.str()];
      if (entry.first++ == 0) entry.second = &t;
    }
    std::ostringstream os;
    os << "deadlock: no thread of the block can proceed";
    for (const auto& [where, entry] : waits) {
      os << "\n  " << entry.first << " thread(s) wait at " << where << ", e.g. "
         << describe(entry.second);
    }
    if (exited > 0) os << "\n  " << exited << " thread(s) have exited";
    fatal(os.str());
  }

  Thread threads_[kMaxThreadsPerBlock];
  Warp warps_[kMaxThreadsPerBlock / 32];
  int n_ = 0;
  bool reverse_ = false;
  bool in_block_ = false;
  BlockGroup* group_ = nullptr;
  unsigned rank_ = 0;
  int done_ = 0;
  const Thread* first_exited_ = nullptr;
  Thread* current_ = nullptr;
  const KernelCall* call_ = nullptr;

  int barrier_arrived_ = 0;
  uint64_t barrier_generation_ = 0;
  int barrier_count_[2] = {0, 0};  // by generation parity: readers of the last one may lag
  const char* barrier_file_ = "";
  int barrier_line_ = 0;
  const Thread* barrier_first_ = nullptr;

  Context os_context_;
  std::vector<std::unique_ptr<Fiber>> fibers_;
  Fiber* free_fibers_ = nullptr;
  std::vector<std::unique_ptr<WarpGroup>> groups_;
  WarpGroup* free_groups_ = nullptr;
  unsigned char* shared_ = nullptr;
  unsigned char* static_shared_ = nullptr;
  size_t static_used_ = 0;      // arena bytes the block's static arrays and redzones take
  size_t static_declared_ = 0;  // what the same arrays would take on a GPU (no redzones)

  uint64_t blocks_ = 0, threads_run_ = 0, barriers_ = 0, collectives_ = 0, poisoned_ = 0;
};

void Fiber::fiber_main(void* fiber) {
  static_cast<Fiber*>(fiber)->runner->fiber_loop(static_cast<Fiber*>(fiber));
}

// The runner of this OS thread: created on its first block, destroyed when the thread exits. The
// raw pointer is what the hot paths read (a thread_local with a destructor needs a guarded
// access).
__thread Runner* t_runner;

struct RunnerOwner {
  std::unique_ptr<Runner> runner;
  ~RunnerOwner() { t_runner = nullptr; }
};
thread_local RunnerOwner t_runner_owner;

[[gnu::noinline]] Runner& make_runner() {
  t_runner_owner.runner = std::make_unique<Runner>();
  t_runner = t_runner_owner.runner.get();
  return *t_runner;
}

inline Runner& runner() {
  return __builtin_expect(t_runner != nullptr, 1) ? *t_runner : make_runner();
}

// Runs blocks [next, count) taken one at a time from a shared counter.
void run_blocks(const KernelCall& call, bool reverse, std::atomic<uint64_t>& next,
                uint64_t count) {
  Runner& r = runner();
  for (uint64_t block = next.fetch_add(1); block < count; block = next.fetch_add(1)) {
    r.run_block(call, reverse, block);
  }
  r.flush_counters();
}

// ---- worker pool -----------------------------------------------------------------------------

// workers - 1 OS threads that join the launching thread in taking blocks.
class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()); }

  void run(const KernelCall& call, bool reverse, uint64_t count) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      call_ = &call;
      reverse_ = reverse;
      count_ = count;
      next_.store(0);
      running_ = static_cast<int>(threads_.size());
      ++job_;
    }
    wake_.notify_all();
    run_blocks(call, reverse, next_, count);
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [this] { return running_ == 0; });
  }

 private:
  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || job_ != seen; });
        if (stop_) return;
        seen = job_;
      }
      run_blocks(*call_, reverse_, next_, count_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--running_ == 0) finished_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::vector<std::thread> threads_;
  const KernelCall* call_ = nullptr;
  bool reverse_ = false;
  uint64_t count_ = 0;
  std::atomic<uint64_t> next_{0};
  int running_ = 0;
  uint64_t job_ = 0;
  bool stop_ = false;
};

std::mutex g_pool_mutex;  // one multi-worker grid at a time
Pool* g_pool = nullptr;

// A forked child has only the forking thread: forget (leak) the parent's pool there.
void forget_pool_in_child() { g_pool = nullptr; }

struct PoolOwner {
  ~PoolOwner() {
    delete g_pool;
    g_pool = nullptr;
  }
};
PoolOwner g_pool_owner;

}  // namespace

int sync_block(int predicate, const char* file, int line) {
  return runner().sync_block(predicate, file, line);
}

void sync_grid(const char* file, int line) { runner().sync_block(0, file, line, Span::grid); }

void sync_cluster(const char* file, int line) {
  runner().sync_block(0, file, line, Span::cluster);
}

unsigned cluster_rank(const char* file, int line) { return runner().cluster_rank(file, line); }

void* map_shared_rank(const void* p, unsigned rank, const char* file, int line) {
  return runner().map_shared_rank(p, rank, file, line);
}

void dependency_sync() { runner().dependency_sync(); }

void* place_static_shared(StaticSharedSite& site, size_t bytes, size_t align, const char* name,
                          const char* file, int line) {
  return runner().place_static_shared(site, bytes, align, name, file, line);
}

uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width,
                         const char* file, int line) {
  return runner().warp_collective(op, mask, value, arg, width, file, line);
}

unsigned active_mask() { return runner().active_mask(); }

void trap(const char* file, int line) { runner().trap(file, line); }

void run_grid(const KernelCall& call) {
  if (t_runner != nullptr && t_runner->in_block()) {
    std::fprintf(stderr,
                 "unetcu simt: kernel %s (launched at %s:%d) was launched from inside a kernel; "
                 "dynamic parallelism is not emulated\n",
                 call.name, call.file, call.line);
    std::abort();
  }
  g_counters.launches.fetch_add(1, std::memory_order_relaxed);
  if (call.overlapping) g_counters.overlapping_launches.fetch_add(1, std::memory_order_relaxed);
  const uint64_t count = uint64_t{call.grid.x} * call.grid.y * call.grid.z;
  const bool reverse = schedule() == Schedule::reverse;
  if (call.cooperative || call.cluster != 0) {
    // Blocks at once, as a GPU runs a cooperative grid or a cluster: one OS thread (and Runner)
    // each, started in rank order; the schedule still orders the threads within each block.
    // A cluster launch runs its clusters one after another (cluster k: blocks k * size to
    // k * size + size - 1, consecutive along x as size divides grid.x) on the same threads,
    // so a cluster of 8 costs 8 threads and Runners per launch, not per cluster.
    const unsigned size = call.cooperative ? static_cast<unsigned>(count) : call.cluster;
    const uint64_t groups = count / size;
    BlockGroup group(call, size);
    std::vector<std::thread> threads;
    threads.reserve(size);
    for (unsigned rank = 0; rank < size; ++rank) {
      threads.emplace_back([&call, &group, reverse, rank, size, groups] {
        Runner& r = runner();
        group.join(rank, r.shared());
        r.set_group(&group, rank);
        for (uint64_t k = 0; k < groups; ++k) {
          r.run_block(call, reverse, k * size + rank);
#if defined(UNETCU_SIMT_ASAN)
          if (call.cluster != 0) r.poison_shared();
#endif
          group.block_exited(rank, "block " + xyz(blockIdx));  // run_block set blockIdx
        }
        r.set_group(nullptr, 0);
        r.flush_counters();
      });
    }
    for (std::thread& t : threads) t.join();
    return;
  }
  const int n_workers = workers();
  if (n_workers <= 1 || count <= 1) {
    std::atomic<uint64_t> next{0};
    run_blocks(call, reverse, next, count);
    return;
  }
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr || g_pool->size() != n_workers - 1) {
    static std::once_flag registered;
    std::call_once(registered, [] { pthread_atfork(nullptr, nullptr, &forget_pool_in_child); });
    delete g_pool;
    g_pool = new Pool(n_workers - 1);
  }
  g_pool->run(call, reverse, count);
}

}  // namespace detail

void set_schedule(Schedule s) { detail::g_schedule.store(static_cast<int>(s)); }

Schedule schedule() {
  int s = detail::g_schedule.load();
  if (s < 0) {
    const char* value = std::getenv("UNETCU_SIMT_SCHEDULE");
    s = static_cast<int>(value != nullptr && std::strcmp(value, "reverse") == 0
                             ? Schedule::reverse
                             : Schedule::forward);
    detail::g_schedule.store(s);
  }
  return static_cast<Schedule>(s);
}

void set_workers(int n) { detail::g_workers.store(n > 0 ? n : 0); }

int workers() {
  int n = detail::g_workers.load();
  if (n <= 0) {
    n = detail::env_int("UNETCU_SIMT_WORKERS", 1);
    if (n < 1) n = 1;
    detail::g_workers.store(n);
  }
  return n;
}

Counters counters() {
  const detail::GlobalCounters& c = detail::g_counters;
  Counters out;
  out.launches = c.launches.load();
  out.overlapping_launches = c.overlapping_launches.load();
  out.blocks = c.blocks.load();
  out.threads = c.threads.load();
  out.barriers = c.barriers.load();
  out.warp_collectives = c.warp_collectives.load();
  out.poisoned_reads = c.poisoned_reads.load();
  return out;
}

void reset_counters() {
  detail::GlobalCounters& c = detail::g_counters;
  c.launches = 0;
  c.overlapping_launches = 0;
  c.blocks = 0;
  c.threads = 0;
  c.barriers = 0;
  c.warp_collectives = 0;
  c.poisoned_reads = 0;
}

}  // namespace simt
}  // namespace unetcu
