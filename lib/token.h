// Token: the per-request abort state.
//
// A token starts running and is aborted at most once, with a reason and the
// monotonic time of detection. Whoever aborts first wins; later attempts are
// ignored, so the monitor thread (socket events) and the request thread (a
// failed write) may race without coordination.
//
// Thread contract: every member is safe to call from any thread at any time
// while the token is alive. on_abort() callbacks run on the thread that
// aborts the token (the monitor thread for socket events), or at once on the
// caller's thread if the token is already aborted. aborted() is one acquire load (no syscall),
// cheap enough for a handler's tight loop. wait_until() blocks the caller on a futex and wakes at
// once when abort() is called from another thread; while it sleeps, the caller has the
// scheduler's shortest slice (sched_slice.h), so that once woken it is not left queued. The
// token is owned by the request; the monitor only holds it while a watch is registered, and
// unwatching is synchronous (see monitor.h).
// Lifetime: a waiter may wake while abort() still runs the callbacks, so the token must
// outlive whoever aborts it, which unwatch() and cancel_timer() ensure.
//
// Stop notice: independently of the abort, a token can be told that its process is
// stopping (stop()): stopping() becomes true and wait_event() wakes, so a long-poll can
// end cleanly while its client is still there. A stop is not an abort: aborted() stays
// false, cleanups are selected as for success, and wait_until() (abort-only waiting, as
// lock acquisition uses) ignores it.
#ifndef ABORTGUARD_TOKEN_H
#define ABORTGUARD_TOKEN_H

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>

#include "reason.h"
#include "sched_slice.h"

namespace abortguard {

class Token {
  public:
    using Callback = std::function<void(Reason)>;

    Token() noexcept = default;
    ~Token();
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;

    bool aborted() const noexcept {
        return (state_.load(std::memory_order_acquire) & kRunMask) == kAborted;
    }
    // Reason::kNone while running.
    Reason reason() const noexcept { return aborted() ? reason_ : Reason::kNone; }
    // CLOCK_MONOTONIC nanoseconds of detection; 0 while running.
    int64_t aborted_at_ns() const noexcept { return aborted() ? at_ns_ : 0; }

    // Marks the token aborted and runs the on_abort callbacks, oldest first.
    // Returns true if this call did it, false if the token was already
    // aborted (the first reason and time stay). claim() then notify().
    bool abort(Reason reason, int64_t at_ns) noexcept;

    // abort() in two halves, for a thread that aborts many tokens at once
    // (the monitor, a batch of socket events): claim() publishes the abort
    // (aborted(), reason() and aborted_at_ns() say so from then on) and
    // neither wakes a waiter nor runs anything, so the whole batch is marked
    // before the first woken thread can preempt the claimer. notify() runs
    // the callbacks, wakes the waiters and tells the owner; whoever got
    // true from claim() must call it, once, soon after, on the same thread.
    bool claim(Reason reason, int64_t at_ns) noexcept;
    void notify() noexcept;
    // notify() in three steps, for a thread that notifies many tokens at once
    // and wants the effects on other processes (a proxied backend's cut, run
    // by a callback) out first: run_callbacks() on every token of the batch,
    // then tell_owner() on each (the lifecycle's bookkeeping, cheap), then
    // wake_waiters() on each. Each exactly once, by whoever got true from
    // claim().
    void run_callbacks() noexcept;
    void wake_waiters() noexcept;
    void tell_owner() noexcept;

    // Runs `cb` exactly once when the token is aborted (never if it is not).
    // An exception it throws is logged and dropped. Returns false only when
    // out of memory. `label` names it in that log line.
    bool on_abort(Callback cb, const char* label = "on_abort callback") noexcept;

    // Blocks until the token is aborted or CLOCK_MONOTONIC reaches
    // `deadline_ns`. Returns aborted(). Spurious wake-ups are absorbed.
    bool wait_until(int64_t deadline_ns) const noexcept;

    // The stop notice: returns true if this call delivered it (later calls
    // are ignored). Wakes every wait_event() in progress.
    bool stop() noexcept;
    bool stopping() const noexcept {
        return (state_.load(std::memory_order_acquire) & kStopBit) != 0;
    }

    enum class Wake { kTimeout, kAborted, kStopped };
    // Blocks until the token is aborted, the stop notice interrupts this
    // wait, or `deadline_ns` passes. The stop notice is reported once per
    // waiter that was sleeping when it came, and otherwise to the first wait
    // that starts after it; later waits sleep normally (so a loop that only
    // knows kAborted and kTimeout never spins). kAborted wins over kStopped.
    Wake wait_event(int64_t deadline_ns) const noexcept;

    // The object that owns this token (a RequestState) is told of the abort,
    // once, on the aborting thread, after the on_abort callbacks and before
    // the waiters' wake-up (a woken waiter may end the request at once;
    // its owner is told by then), without the allocation on_abort needs.
    // Set before the token is shared.
    using OwnerHook = void (*)(void* owner, Reason reason);
    void set_owner(void* owner, OwnerHook hook) noexcept {
        owner_ = owner;
        owner_hook_ = hook;
    }

  private:
    void sleep(uint32_t seen, int64_t deadline_ns,
               std::optional<ShortSliceScope>* slice) const noexcept;

    // Low bits: the run state; kStopBit: the stop notice. Both live in the
    // futex word so one wake covers either event.
    enum : uint32_t { kRunning = 0, kClaimed = 1, kAborted = 2, kRunMask = 3, kStopBit = 4 };

    // The futex word. reason_ and at_ns_ are written by the single winner
    // between kClaimed and the release store of kAborted, and read only
    // after an acquire load has seen kAborted.
    mutable std::atomic<uint32_t> state_{kRunning};
    mutable std::atomic<uint32_t> waiters_{0};
    Reason reason_ = Reason::kNone;
    mutable std::atomic<bool> stop_reported_{false};
    int64_t at_ns_ = 0;
    void* owner_ = nullptr;
    OwnerHook owner_hook_ = nullptr;

    // on_abort() callbacks: a lock-free stack (8 bytes while unused, which
    // is nearly always); abort() swaps in closed() and runs what it took.
    struct Pending {
        Callback cb;
        const char* label;
        Pending* next;
    };
    static void run_callback(const Pending& p, Reason reason) noexcept;
    static Pending* closed() noexcept;

    std::atomic<Pending*> callbacks_{nullptr};
};

}  // namespace abortguard

#endif  // ABORTGUARD_TOKEN_H
