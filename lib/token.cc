#include "token.h"

#include <errno.h>
#include <unistd.h>

#include <exception>
#include <memory>
#include <new>

#include "clock.h"
#include "futex.h"
#include "log.h"

namespace abortguard {

bool Token::abort(Reason reason, int64_t at_ns) noexcept {
    if (!claim(reason, at_ns))
        return false;
    notify();
    return true;
}

bool Token::claim(Reason reason, int64_t at_ns) noexcept {
    uint32_t expected = state_.load(std::memory_order_relaxed);
    do {
        if ((expected & kRunMask) != kRunning)
            return false;
    } while (!state_.compare_exchange_weak(expected, (expected & kStopBit) | kClaimed,
                                           std::memory_order_acquire));
    reason_ = reason;
    at_ns_ = at_ns;
    // kClaimed -> kAborted, keeping a stop bit set meanwhile. The seq_cst
    // update pairs with the waiter's increment and futex check (notify()
    // loads the count): either notify() sees its increment and wakes it, or
    // it sees kAborted.
    state_.fetch_add(kAborted - kClaimed, std::memory_order_seq_cst);
    return true;
}

void Token::notify() noexcept {
    run_callbacks();
    tell_owner();
    wake_waiters();
}

void Token::wake_waiters() noexcept {
    if (waiters_.load(std::memory_order_seq_cst) != 0)
        futex_wake_all(&state_);
}

void Token::tell_owner() noexcept {
    if (owner_hook_ != nullptr)
        owner_hook_(owner_, reason_);
}

void Token::run_callbacks() noexcept {
    // Oldest first: the stack holds them newest first.
    Pending* list = callbacks_.exchange(closed(), std::memory_order_acq_rel);
    Pending* oldest_first = nullptr;
    while (list != nullptr) {
        Pending* next = list->next;
        list->next = oldest_first;
        oldest_first = list;
        list = next;
    }
    while (oldest_first != nullptr) {
        std::unique_ptr<Pending> p(oldest_first);
        oldest_first = p->next;
        run_callback(*p, reason_);
    }
}

bool Token::on_abort(Callback cb, const char* label) noexcept {
    std::unique_ptr<Pending> p(new (std::nothrow) Pending{std::move(cb), label, nullptr});
    if (!p)
        return false;
    Pending* head = callbacks_.load(std::memory_order_acquire);
    while (head != closed()) {
        p->next = head;
        if (callbacks_.compare_exchange_weak(head, p.get(), std::memory_order_acq_rel)) {
            p.release();
            return true;
        }
    }
    // abort() has already taken the list (so reason_ is published): run now.
    run_callback(*p, reason());
    return true;
}

// The callbacks stack's "abort() has run" mark: an address no node has.
Token::Pending* Token::closed() noexcept {
    static char mark;
    return reinterpret_cast<Pending*>(&mark);
}

Token::~Token() {
    Pending* list = callbacks_.load(std::memory_order_acquire);
    while (list != nullptr && list != closed()) {
        std::unique_ptr<Pending> p(list);
        list = p->next;
    }
}

void Token::run_callback(const Pending& p, Reason reason) noexcept {
    const char* what;
    try {
        p.cb(reason);
        return;
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
        what = "a non-standard exception";
    }
    AG_LOG(kError, "AG0105: %s threw: %s", p.label, what);
}

// One futex sleep while the word still reads `seen`; EINTR, EAGAIN and
// ETIMEDOUT all return for the caller to re-check. The first sleep of a wait
// takes the short slice (`slice` keeps it for the rest of the wait): woken,
// the thread runs first.
void Token::sleep(uint32_t seen, int64_t deadline_ns,
                  std::optional<ShortSliceScope>* slice) const noexcept {
    if (!*slice)
        slice->emplace();
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    futex_wait_until(&state_, seen, deadline_ns);
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

bool Token::wait_until(int64_t deadline_ns) const noexcept {
    std::optional<ShortSliceScope> slice;
    for (;;) {
        const uint32_t seen = state_.load(std::memory_order_seq_cst);
        if ((seen & kRunMask) == kAborted)
            return true;
        if (mono_ns() >= deadline_ns)
            return false;
        sleep(seen, deadline_ns, &slice);
    }
}

bool Token::stop() noexcept {
    const uint32_t before = state_.fetch_or(kStopBit, std::memory_order_seq_cst);
    if (before & kStopBit)
        return false;
    if (waiters_.load(std::memory_order_seq_cst) != 0)
        futex_wake_all(&state_);
    return true;
}

Token::Wake Token::wait_event(int64_t deadline_ns) const noexcept {
    bool stop_seen = false;  // the notice came before this wait began
    std::optional<ShortSliceScope> slice;
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
        sleep(seen, deadline_ns, &slice);
    }
}

}  // namespace abortguard
