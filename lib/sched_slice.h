// Latency hints to Linux's EEVDF scheduler: a thread that sleeps until an
// abort asks for the shortest time slice, so that it runs as soon as it is
// woken instead of waiting behind threads that finish other work.
//
// Since Linux 6.12 a SCHED_OTHER thread may request its own slice
// (sched_setattr's sched_runtime, 0.1-100 ms; no privilege needed), and a
// woken thread with a shorter slice than the running one preempts it. On
// older kernels the request is accepted and ignored: the first attempt finds
// that out and later ones cost nothing. Threads under a real-time policy are
// left alone.
#ifndef ABORTGUARD_SCHED_SLICE_H
#define ABORTGUARD_SCHED_SLICE_H

#include <sys/types.h>

#include <cstdint>

#include "status.h"

namespace abortguard {

// The kernel's shortest slice (sched_runtime is clamped to 0.1-100 ms).
constexpr uint64_t kShortSliceNs = 100000;

// Sets thread `tid`'s nice value and asks for the shortest slice, in one
// call. A nice value the thread may not take (EPERM/EACCES: no CAP_SYS_NICE)
// is reported, and the slice is still requested at the thread's own nice
// value. Any thread of the process, any time.
Status set_thread_priority(pid_t tid, int nice) noexcept;

// The calling thread runs with the shortest slice while this lives, then
// gets its own back. Thread contract: created and destroyed on one thread;
// neither copied nor moved.
class ShortSliceScope {
  public:
    ShortSliceScope() noexcept;
    ~ShortSliceScope();
    ShortSliceScope(const ShortSliceScope&) = delete;
    ShortSliceScope& operator=(const ShortSliceScope&) = delete;

  private:
    bool set_ = false;
    uint64_t own_runtime_ = 0;  // the thread's slice request before (0: the default)
};

}  // namespace abortguard

#endif  // ABORTGUARD_SCHED_SLICE_H
