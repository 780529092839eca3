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

// Time arithmetic saturates: a duration from a user (a directive, an API
// timeout of APR_INT64_MAX, std::chrono::duration::max()) must never wrap
// into the past and fire at once.
inline int64_t sat_add(int64_t a, int64_t b) noexcept {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

inline int64_t sat_mul(int64_t a, int64_t b) noexcept {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
    return r;
}

// The deadline `timeout_ns` from now; INT64_MAX (never) when that is beyond
// the clock's range.
inline int64_t deadline_after(int64_t timeout_ns) noexcept {
    return sat_add(mono_ns(), timeout_ns);
}

inline struct timespec to_timespec(int64_t ns) noexcept {
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    return ts;
}

}  // namespace abortguard

#endif  // ABORTGUARD_CLOCK_H
