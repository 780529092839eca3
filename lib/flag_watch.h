// FlagWatcher: aborts requests whose abort is signalled by a flag in memory
// rather than by a socket -- an HTTP/2 stream's connection, whose `aborted`
// field mod_http2 sets on RST_STREAM or when the client's connection closes.
//
// The flags are checked on the monitor thread right after whoever sets them
// may have done so -- nudge(): HTTP/2's glue nudges after mod_http2 read
// and processed its client's frames (an RST_STREAM, a GOAWAY) and when the
// client's connection ends -- and, as a fallback, by a timer every
// `interval_ns` that re-arms itself only while at least one watched flag is
// not yet seen set: with nothing to watch, the monitor has no periodic
// wake-up at all (one last tick after the last unwatch finds nothing and
// stops).
//
// Safety property (as Monitor::unwatch): once unwatch() returns, the flag,
// token and arg of that watch are not touched and never will be. The poll
// runs under the watcher's lock, which unwatch() takes.
//
// Thread contract: watch()/unwatch() from any thread but the monitor's (an
// AbortFn or on-abort callback must not call them). The flag is read with a
// relaxed atomic load while another thread may write it. AbortFn callbacks
// and the token's on-abort callbacks run on the monitor thread, one at a
// time, and must be short and not block. Destroy only when no watch is left
// and the monitor no longer runs timers, or before the monitor is destroyed.
#ifndef ABORTGUARD_FLAG_WATCH_H
#define ABORTGUARD_FLAG_WATCH_H

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "monitor.h"
#include "reason.h"
#include "status.h"
#include "token.h"

namespace abortguard {

class FlagWatcher {
  public:
    using Id = uint64_t;  // 0 is never a valid id
    // The fallback poll; the nudges carry the latency.
    static constexpr int64_t kDefaultIntervalNs = 100 * 1000 * 1000;

    explicit FlagWatcher(Monitor& monitor, int64_t interval_ns = kDefaultIntervalNs) noexcept
        : monitor_(monitor), interval_ns_(interval_ns) {}
    ~FlagWatcher();
    FlagWatcher(const FlagWatcher&) = delete;
    FlagWatcher& operator=(const FlagWatcher&) = delete;

    // Once `*flag` is seen nonzero (within about one interval), aborts
    // `token` with `reason` and, if that aborted it, calls fn(arg, reason)
    // on the monitor thread. One-shot. flag, token and arg must stay valid
    // until unwatch() returns.
    Status watch(const unsigned* flag, Reason reason, Token* token, Monitor::AbortFn fn, void* arg,
                 Id* id);

    // Synchronous; unknown ids are ignored.
    void unwatch(Id id) noexcept;

    // Checks the flags on the monitor thread as soon as it can (one pending
    // nudge at a time; a nudge while none is watched costs nothing). Any
    // thread but the monitor's inside a callback.
    void nudge() noexcept;
    // For an event after which the flags are set a little later, by a thread
    // the caller cannot wait for (a connection that ended: mod_http2 aborts
    // its streams once it has handled the end): checks at 0.5, 1, 2, 4 and
    // 8 ms from now.
    void nudge_soon() noexcept;
    // Whether a watched flag is not yet seen set: one relaxed load, for a
    // caller deciding whether a nudge is worth it.
    bool waiting() const noexcept { return waiting_.load(std::memory_order_relaxed) > 0; }

    // Watches not yet unwatched (fired ones included).
    size_t size() const;
    // Whether a poll timer is pending or running (tests of the idle cost).
    bool polling() const;

  private:
    struct Entry {
        const unsigned* flag;
        Reason reason;
        Token* token;
        Monitor::AbortFn fn;
        void* arg;
        bool fired;
    };

    static void tick_thunk(void* self) { static_cast<FlagWatcher*>(self)->tick(); }
    static void nudged_thunk(void* self) { static_cast<FlagWatcher*>(self)->nudged(); }
    static void burst_thunk(void* self) { static_cast<FlagWatcher*>(self)->burst(); }
    void tick() noexcept;
    void nudged() noexcept;
    void burst() noexcept;
    void check_locked(int64_t now) noexcept;
    // Adds a timer at `at` for `fn`; its id in *slot (0 when out of memory:
    // the fallback poll finds the flag).
    void schedule_locked(int64_t at, Monitor::TimerFn fn, Monitor::TimerId* slot) noexcept;
    // mu_ held: adds the next tick; false (timer_ 0) when out of memory.
    bool schedule_locked() noexcept;

    Monitor& monitor_;
    const int64_t interval_ns_;
    mutable std::mutex mu_;
    std::unordered_map<Id, Entry> entries_;  // guarded by mu_
    size_t pending_ = 0;                     // guarded by mu_: entries not fired
    std::atomic<size_t> waiting_{0};         // pending_, readable without mu_
    Id next_id_ = 1;                         // guarded by mu_
    // The one poll timer, pending or running; 0 when there is none. There
    // is never more than one, so the destructor's cancel covers it.
    Monitor::TimerId timer_ = 0;  // guarded by mu_
    Monitor::TimerId nudge_ = 0;  // guarded by mu_: the one pending nudge()
    Monitor::TimerId burst_ = 0;  // guarded by mu_: the next nudge_soon() check
    int burst_left_ = 0;          // guarded by mu_: nudge_soon() checks to come
    int64_t burst_gap_ns_ = 0;    // guarded by mu_
    bool stopping_ = false;       // guarded by mu_
};

}  // namespace abortguard

#endif  // ABORTGUARD_FLAG_WATCH_H
