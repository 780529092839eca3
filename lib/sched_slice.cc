#include "sched_slice.h"

#include <errno.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace abortguard {

namespace {

// The first version of the kernel's struct sched_attr (SCHED_ATTR_SIZE_VER0);
// glibc 2.36 declares neither the struct nor the calls.
struct SchedAttr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};
static_assert(sizeof(SchedAttr) == 48, "SCHED_ATTR_SIZE_VER0");

constexpr uint64_t kResetOnFork = 0x01;  // SCHED_FLAG_RESET_ON_FORK

// Whether this kernel honours a SCHED_OTHER thread's sched_runtime; unknown
// until the first request.
enum Support : int { kUnknown, kHonoured, kIgnored };
std::atomic<int> g_support{kUnknown};

// The slice sched_getattr reports for a thread that asked for none (the
// kernel's base slice); 0 until a scope has ended once.
std::atomic<uint64_t> g_default_runtime{0};

bool get_attr(pid_t tid, SchedAttr* a) noexcept {
    *a = SchedAttr{};
    return syscall(SYS_sched_getattr, tid, a, sizeof *a, 0) == 0;
}

// Keeps the reset-on-fork flag as it was; sets no utilisation clamps.
int set_attr(pid_t tid, const SchedAttr& a) noexcept {
    SchedAttr copy = a;
    copy.size = sizeof copy;
    copy.sched_flags = a.sched_flags & kResetOnFork;
    return syscall(SYS_sched_setattr, tid, &copy, 0) == 0 ? 0 : errno;
}

bool fair(uint32_t policy) noexcept {
    return policy == SCHED_OTHER || policy == SCHED_BATCH;
}

// Requests `runtime` for `tid` at `nice`; learns once whether the kernel
// honours it. Returns an errno value (0: done, or accepted and ignored).
int request(pid_t tid, SchedAttr a, int nice, uint64_t runtime) noexcept {
    a.sched_nice = nice;
    a.sched_runtime = runtime;
    const int err = set_attr(tid, a);
    if (err != 0 || runtime == 0 || g_support.load(std::memory_order_relaxed) != kUnknown)
        return err;
    SchedAttr now;
    const bool honoured = get_attr(tid, &now) && now.sched_runtime == runtime;
    g_support.store(honoured ? kHonoured : kIgnored, std::memory_order_relaxed);
    return 0;
}

uint64_t wanted_runtime() noexcept {
    return g_support.load(std::memory_order_relaxed) == kIgnored ? 0 : kShortSliceNs;
}

}  // namespace

Status set_thread_priority(pid_t tid, int nice) noexcept {
    SchedAttr a;
    if (!get_attr(tid, &a)) {
        // Without sched_getattr (before Linux 3.14): the nice value alone.
        if (setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice) != 0)
            return Status::from_errno(errno, "setpriority");
        return Status::ok();
    }
    if (!fair(a.sched_policy))
        return Status::ok();  // real-time: neither nice nor a slice applies
    const int err = request(tid, a, nice, wanted_runtime());
    if ((err == EPERM || err == EACCES) && nice < a.sched_nice) {
        request(tid, a, a.sched_nice, wanted_runtime());  // the slice at least
        return Status::from_errno(err, "sched_setattr");
    }
    return err == 0 ? Status::ok() : Status::from_errno(err, "sched_setattr");
}

ShortSliceScope::ShortSliceScope() noexcept {
    if (g_support.load(std::memory_order_relaxed) == kIgnored)
        return;
    SchedAttr a;
    if (!get_attr(0, &a) || !fair(a.sched_policy))
        return;
    if (a.sched_runtime != 0 && a.sched_runtime <= kShortSliceNs)
        return;  // short already
    own_runtime_ = a.sched_runtime;
    set_ = request(0, a, a.sched_nice, kShortSliceNs) == 0 &&
           g_support.load(std::memory_order_relaxed) == kHonoured;
}

// Back to the thread's own slice. sched_getattr reports the kernel's base
// slice for a thread that never asked for one, and asking for that value
// would pin it; so a slice equal to the base one is given back as "none"
// (0). The base slice is learnt the first time, from the kernel's answer.
ShortSliceScope::~ShortSliceScope() {
    if (!set_)
        return;
    SchedAttr a;
    if (!get_attr(0, &a) || !fair(a.sched_policy))
        return;  // changed meanwhile by someone else: theirs now
    const uint64_t base = g_default_runtime.load(std::memory_order_relaxed);
    const bool own_is_base = base != 0 && own_runtime_ == base;
    a.sched_runtime = base == 0 || own_is_base ? 0 : own_runtime_;
    if (set_attr(0, a) != 0 || base != 0)
        return;
    SchedAttr now;
    if (!get_attr(0, &now))
        return;
    g_default_runtime.store(now.sched_runtime, std::memory_order_relaxed);
    if (now.sched_runtime != own_runtime_) {
        a.sched_runtime = own_runtime_;  // it had a slice of its own
        set_attr(0, a);
    }
}

}  // namespace abortguard
