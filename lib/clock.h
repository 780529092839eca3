// Monotonic time, the one clock every timestamp in the core uses.
//
// Thread contract: free functions, callable from any thread and from signal
// handlers (clock_gettime is async-signal-safe).
#ifndef ABORTGUARD_CLOCK_H
#define ABORTGUARD_CLOCK_H

#include <time.h>

#include <cstdint>

namespace abortguard {

// Nanoseconds on CLOCK_MONOTONIC: comparable across threads and processes of
// one machine, which lets tests relate a client's close to a handler's notice.
inline int64_t mono_ns() noexcept {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline struct timespec to_timespec(int64_t ns) noexcept {
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    return ts;
}

}  // namespace abortguard

#endif  // ABORTGUARD_CLOCK_H
