// CleanupRegistry: what a request must undo or finish when it ends.
//
// Cleanups run once, at the end of the request, newest first (like scope
// exits), selected by whether the client went away before the response
// completed: on-abort cleanups roll back, on-success cleanups commit, the
// others always run. An exception thrown by one is logged with its name and
// contained; the rest still run. Every cleanup is timed, and one slower than
// the caller's threshold is logged at warn.
//
// Thread contract: add() may be called from any thread. run() may be called
// from several threads (the request's end, and a thread that gives up on a
// hung request): exactly one of them runs the cleanups, each exactly once;
// add() after that returns false. Cleanups run on the thread that called run().
#ifndef ABORTGUARD_REGISTRY_H
#define ABORTGUARD_REGISTRY_H

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace abortguard {

// Which outcomes a cleanup runs on: a bit set. The values are the C
// boundary's AG_WHEN_* and the public ABORTGUARD_ON_* (static_asserts in
// agcore.cc and ag_api.c tie them together). Named apart from the public
// abortguard::When (abortguard.hpp), which handler authors use, so that one
// translation unit may see both.
enum class CleanupWhen : unsigned { kOnAbort = 1, kOnSuccess = 2, kAlways = 3 };

class CleanupRegistry {
  public:
    using Fn = std::function<void(bool aborted)>;

    struct Summary {
        int run = 0;     // cleanups called
        int failed = 0;  // ... that threw
        int slow = 0;    // ... that took longer than the threshold
        int64_t total_ns = 0;
        int64_t slowest_ns = 0;
    };

    CleanupRegistry() = default;
    CleanupRegistry(const CleanupRegistry&) = delete;
    CleanupRegistry& operator=(const CleanupRegistry&) = delete;

    // `identity` is what the log names the cleanup by: a code address is
    // resolved to its exported symbol, or to its file and offset, when a
    // line is logged (dladdr); `label`, if not empty, is used instead. Returns false after run() or
    // when out of memory.
    bool add(Fn fn, CleanupWhen when, const void* identity, std::string label = {}) noexcept;

    // add() that refuses once `limit` cleanups are registered.
    enum class Added { kYes, kFull, kClosed, kNoMemory };
    Added add_bounded(Fn fn, CleanupWhen when, const void* identity, size_t limit) noexcept;

    // Runs the selected cleanups; a cleanup slower than `slow_ns` (0: no
    // threshold) is logged at warn. A second call runs nothing.
    Summary run(bool aborted, int64_t slow_ns) noexcept;

    size_t size() const;
    // True once run() has started: add() is refused from then on.
    bool closed() const;

    // For observers on other threads (a watchdog that reports what a
    // stopping process waits for): the cleanup run() is running now, named
    // as in log lines, and since when (CLOCK_MONOTONIC); false when none.
    bool running(char* name, size_t len, int64_t* since_ns) const noexcept;

  private:
    struct Entry {
        Fn fn;
        CleanupWhen when;
        const void* identity;
        std::string label;
    };
    // Fits the name in buf (snprintf semantics); never allocates.
    static const char* describe(const Entry& e, char* buf, size_t len) noexcept;
    static const char* describe_identity(const void* identity, char* buf, size_t len) noexcept;
    static bool run_one(const Entry& e, bool aborted) noexcept;
    static void log_throw(const Entry& e, const char* what) noexcept;

    mutable std::mutex mu_;
    std::vector<Entry> entries_;  // guarded by mu_
    bool done_ = false;           // guarded by mu_
    // The entry run() is in; its identity only (a label's string may be
    // gone by the time an observer reads it).
    std::atomic<const void*> running_identity_{nullptr};
    std::atomic<int64_t> running_since_ns_{0};
};

}  // namespace abortguard

#endif  // ABORTGUARD_REGISTRY_H
