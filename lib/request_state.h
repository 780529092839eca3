// RequestState: everything the core keeps about one monitored request, in
// memory the core owns (never the request's pools): its Token, its cleanup
// registry, the file locks it holds, and a short copy of its URI and handler.
//
// Every live RequestState is listed in a process-wide in-flight table, so a
// status page or the monitor thread can report on requests (age, state,
// held locks) without touching request memory, and counted in the shared
// in-flight gauge (stats.h). CleanupWhen an aborted request ends (run_cleanups),
// the time since the abort is recorded as wasted work of its handler.
//
// Thread contract: construct, lock_file(), run_cleanups() and destroy on the
// request's thread. token(), add_cleanup(), on_abort(), release_lock(), release_locks(),
// set_response_done() and the in-flight enumeration may be called from any
// thread while the state is alive.
//
// Observer (request_observer.h; in a child, its Lifecycle), when the creator
// names one: it is told when the state begins (a stopping child gives it the
// stop notice at once) and asked for a grace timer when the token is
// aborted; the start of the cleanups and the destructor cancel that timer
// synchronously (so the timer never sees a dead state).
#ifndef ABORTGUARD_REQUEST_STATE_H
#define ABORTGUARD_REQUEST_STATE_H

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "file_lock.h"
#include "inflight.h"
#include "registry.h"
#include "request_observer.h"
#include "status.h"
#include "token.h"
#include "upstream_cut.h"

namespace abortguard {

class RequestState {
  public:
    // A lock bound to this request. Records are reused once released, so a
    // handle carries the record's generation: a stale handle (its lock was
    // released, the record now holds another) is ignored. Valid until the
    // RequestState is destroyed.
    struct HeldLock;
    struct LockRef {
        RequestState* owner = nullptr;  // nullptr: no lock
        uint32_t slot = 0;              // the record's index in owner's table
        uint32_t gen = 0;
    };

    // Per-request bounds: a handler that registers per row, or a loop that
    // leaks locks, must not grow the request's state without limit. Past a
    // bound the call fails with ENOSPC and one warn line per request says so.
    static constexpr size_t kMaxCleanups = 1024;
    static constexpr size_t kMaxAbortCallbacks = 1024;
    static constexpr size_t kMaxLocksHeld = 64;

    enum Flags : unsigned {
        // The stop notice counts as an abort (reason server-stop).
        kStopAborts = 1u << 0,
    };

    // `vhost` is the caller's opaque name for the virtual host (the status
    // page shows a tenant only its own requests); `observer` (may be
    // nullptr) must outlive the state.
    RequestState(const char* uri, const char* handler, unsigned flags = 0, uint64_t vhost = 0,
                 RequestObserver* observer = nullptr) noexcept;
    // Cancels the grace timer (waiting for it if it is running), leaves the
    // table, then releases locks still held (the backstop).
    ~RequestState();
    RequestState(const RequestState&) = delete;
    RequestState& operator=(const RequestState&) = delete;

    Token& token() noexcept { return token_; }
    const Token& token() const noexcept { return token_; }
    int64_t start_ns() const noexcept { return start_ns_; }
    // nullptr when none was created (never creates one).
    CleanupRegistry* cleanups_if_any() noexcept;
    // Registers a cleanup (CleanupRegistry::add) within kMaxCleanups.
    // Errors: ENOSPC past the bound, ECANCELED once the cleanups ran,
    // ENOMEM.
    Status add_cleanup(CleanupRegistry::Fn fn, CleanupWhen when, const void* identity) noexcept;
    // Token::on_abort within kMaxAbortCallbacks: ENOSPC past it, ENOMEM.
    Status on_abort(Token::Callback cb) noexcept;
    // Runs the cleanups (CleanupRegistry::run) and marks the request as
    // ending from now on, which a watchdog may report. The grace period
    // measures the handler, not its cleanups: the grace timer is cancelled
    // first (waiting for a grace action in progress), so a grace action
    // never releases a lock under a running cleanup.
    CleanupRegistry::Summary run_cleanups(bool aborted, int64_t slow_ns) noexcept;

    // Creation order in this process (1, 2, ...): a drain waits for the
    // requests created up to a point.
    uint64_t serial() const noexcept { return serial_; }
    static uint64_t last_serial() noexcept;
    // The child gave up on this request's handler (terminate): a drain does
    // not wait for it. Any thread.
    void mark_given_up() noexcept { given_up_.store(true, std::memory_order_release); }
    bool given_up() const noexcept { return given_up_.load(std::memory_order_acquire); }

    bool stop_aborts() const noexcept { return (flags_ & kStopAborts) != 0; }
    // The handler's response is complete: a stop notice no longer concerns
    // this request.
    void set_response_done() noexcept { response_done_.store(true, std::memory_order_release); }
    bool response_done() const noexcept { return response_done_.load(std::memory_order_acquire); }
    // The destructor has begun.
    bool ending() const noexcept { return ending_.load(std::memory_order_acquire); }
    // The proxy's backend socket to shut down on abort; created on first
    // use (request thread); nullptr when out of memory.
    UpstreamCut* upstream() noexcept;

    // Locks `path` for this request (FileLock::acquire with this request's
    // token as the cancel signal). A lock held longer than `warn_ns`
    // (0: never) is logged at warn once, when it is released. ENOSPC when
    // kMaxLocksHeld are held already.
    Status lock_file(const char* path, LockMode mode, int64_t deadline_ns, int64_t warn_ns,
                     LockRef* out);
    // Harmless for a lock already released and for a stale handle.
    static void release_lock(LockRef lock) noexcept;
    // Releases every lock still held; returns how many were.
    int release_locks() noexcept;
    int held_locks() const;

    // Calls fn for every RequestState of this process, under the table's
    // locks (one shard at a time): fn must copy what it needs and must not
    // block.
    static void for_each(ag_inflight_fn* fn, void* ctx);
    // The same for an exit path that may have interrupted a thread holding
    // a shard's lock (a signal): a busy shard is skipped. Returns false if
    // one was.
    static bool try_for_each(ag_inflight_fn* fn, void* ctx) noexcept;
    // The same with the states themselves, which stay alive while fn runs
    // (the destructor leaves the table under the same lock); fn must be
    // short and must not create or destroy states.
    using StateFn = void (*)(RequestState* state, void* ctx);
    static void for_each_state(StateFn fn, void* ctx);

    // What the status page and the lifecycle's reports show. Not
    // `blocking`: the locks held go unlisted if the state's lock is busy.
    void snapshot(ag_inflight_info* info, bool blocking = true) const;

    // The observer it was created with; nullptr when none.
    RequestObserver* observer() const noexcept { return observer_; }

  private:
    enum Bound : uint8_t { kBoundCleanups = 1, kBoundCallbacks = 2, kBoundLocks = 4 };
    // Records the work done after an abort, once, when the request ends.
    void note_end(int64_t now_ns) noexcept;
    // Logs, once per request and bound, that `what` hit its bound.
    void note_bound(Bound which, const char* what, size_t limit) noexcept;
    bool release(uint32_t slot, uint32_t gen) noexcept;
    // No grace timer from now on; cancels the armed one.
    void close_grace() noexcept;
    size_t free_slot() const noexcept;                        // under mu_
    static void on_token_aborted(void* self, Reason reason);  // Token's owner hook
    void arm_grace() noexcept;

    Token token_;
    const int64_t start_ns_;
    const uint64_t serial_;
    const uint64_t vhost_;
    RequestObserver* const observer_;
    std::atomic<bool> given_up_{false};
    const uint8_t flags_;
    std::atomic<uint8_t> bounds_logged_{0};
    std::atomic<size_t> abort_callbacks_{0};
    std::atomic<bool> response_done_{false};
    std::atomic<bool> ending_{false};
    bool grace_closed_ = false;                // guarded by mu_: the destructor began
    std::atomic<int64_t> ending_since_ns_{0};  // run_cleanups() began
    char uri_[96];                             // a prefix is enough to recognise a request
    char handler_[32];
    // Created on the first add_cleanup(), read by the monitor's grace
    // action; closed_registry() once the cleanups ran without one (a late
    // add is refused, not kept for a run that never comes).
    std::atomic<CleanupRegistry*> cleanups_{nullptr};  // owned
    static CleanupRegistry* closed_registry() noexcept;
    std::unique_ptr<UpstreamCut> upstream_;  // request thread only

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<HeldLock>> locks_;  // guarded by mu_
    uint64_t grace_timer_ = 0;                      // guarded by mu_ (the observer's)

    // The in-flight table: intrusive lists, each guarded by its shard's mutex.
    RequestState* prev_ = nullptr;
    RequestState* next_ = nullptr;
};

}  // namespace abortguard

#endif  // ABORTGUARD_REQUEST_STATE_H
