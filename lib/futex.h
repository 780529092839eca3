// Futex calls on a std::atomic<uint32_t>, process-private: the two ways the
// core blocks a thread on a word without a mutex (Token's waiters, the
// monitor's unwatch() waiting out a callback). No mutex means no lock that a
// preempted thread can hold while the monitor thread needs it.
//
// Thread contract: any thread; both are plain system calls.
#ifndef ABORTGUARD_FUTEX_H
#define ABORTGUARD_FUTEX_H

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "clock.h"

namespace abortguard {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word must be 32 bits");

// Sleeps while `*word == expected`, until woken or CLOCK_MONOTONIC reaches
// `deadline_ns` (FUTEX_WAIT_BITSET takes an absolute deadline, so a retried
// wait never stretches the caller's timeout). Callers re-check their
// condition: EINTR, EAGAIN and spurious returns are all possible.
inline void futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected, int64_t deadline_ns) {
    const struct timespec abs = to_timespec(deadline_ns);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
            expected, &abs, nullptr, FUTEX_BITSET_MATCH_ANY);
}

inline void futex_wake_all(std::atomic<uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX,
            nullptr, nullptr, 0);
}

}  // namespace abortguard

#endif  // ABORTGUARD_FUTEX_H
