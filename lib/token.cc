#include "token.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <exception>
#include <new>

#include "clock.h"
#include "log.h"

namespace abortguard {

namespace {

// FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
// retried wait never stretches the caller's timeout.
long futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected, int64_t deadline_ns) {
    const struct timespec abs = to_timespec(deadline_ns);
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word),
                   FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, &abs, nullptr,
                   FUTEX_BITSET_MATCH_ANY);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX,
            nullptr, nullptr, 0);
}

}  // namespace

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word must be 32 bits");

bool Token::abort(Reason reason, int64_t at_ns) noexcept {
    uint32_t expected = state_.load(std::memory_order_relaxed);
    do {
        if ((expected & kRunMask) != kRunning)
            return false;
    } while (!state_.compare_exchange_weak(expected, (expected & kStopBit) | kClaimed,
                                           std::memory_order_acquire));
    reason_ = reason;
    at_ns_ = at_ns;
    // kClaimed -> kAborted, keeping a stop bit set meanwhile. The seq_cst
    // update and load pair with the waiter's increment and futex check:
    // either we see its increment and wake it, or it sees kAborted.
    state_.fetch_add(kAborted - kClaimed, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0)
        futex_wake_all(&state_);
    if (hook_ != nullptr)
        hook_(hook_arg_, reason);
    std::vector<Pending> callbacks;
    {
        std::lock_guard<std::mutex> lock(callbacks_mu_);
        callbacks.swap(callbacks_);
        callbacks_taken_ = true;
    }
    for (const Pending& p : callbacks)
        run_callback(p, reason);
    return true;
}

bool Token::on_abort(Callback cb, const char* label) noexcept {
    try {
        std::unique_lock<std::mutex> lock(callbacks_mu_);
        if (!callbacks_taken_) {
            callbacks_.push_back(Pending{std::move(cb), label});
            return true;
        }
    } catch (const std::bad_alloc&) {
        return false;
    }
    // abort() has already taken the list (so reason_ is published): run now.
    run_callback(Pending{std::move(cb), label}, reason());
    return true;
}

void Token::run_callback(const Pending& p, Reason reason) noexcept {
    try {
        p.cb(reason);
    } catch (const std::exception& e) {
        AG_LOG(kError, "AG0105: %s threw: %s", p.label, e.what());
    } catch (...) {
        AG_LOG(kError, "AG0105: %s threw a non-standard exception", p.label);
    }
}

bool Token::wait_until(int64_t deadline_ns) const noexcept {
    for (;;) {
        const uint32_t seen = state_.load(std::memory_order_seq_cst);
        if ((seen & kRunMask) == kAborted)
            return true;
        if (mono_ns() >= deadline_ns)
            return false;
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        futex_wait_until(&state_, seen, deadline_ns);  // EINTR/EAGAIN/ETIMEDOUT: re-check
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
}

bool Token::stop(int64_t at_ns) noexcept {
    int64_t none = 0;
    // The first caller's time; published before the bit (release below).
    stop_ns_.compare_exchange_strong(none, at_ns == 0 ? 1 : at_ns, std::memory_order_relaxed);
    const uint32_t before = state_.fetch_or(kStopBit, std::memory_order_seq_cst);
    if (before & kStopBit)
        return false;
    if (waiters_.load(std::memory_order_seq_cst) != 0)
        futex_wake_all(&state_);
    return true;
}

Token::Wake Token::wait_event(int64_t deadline_ns) const noexcept {
    bool stop_seen = false;  // the notice came before this wait began
    for (bool first = true;; first = false) {
        const uint32_t seen = state_.load(std::memory_order_seq_cst);
        if ((seen & kRunMask) == kAborted)
            return Wake::kAborted;
        if (seen & kStopBit) {
            if (first) {
                stop_seen = true;
                // Not reported to any waiter yet: this one reports it.
                if (!stop_reported_.exchange(true, std::memory_order_acq_rel))
                    return Wake::kStopped;
            } else if (!stop_seen) {
                stop_reported_.store(true, std::memory_order_release);
                return Wake::kStopped;
            }
        }
        if (mono_ns() >= deadline_ns)
            return Wake::kTimeout;
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        futex_wait_until(&state_, seen, deadline_ns);  // EINTR/EAGAIN/ETIMEDOUT: re-check
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
    }
}

}  // namespace abortguard
