#include "flag_watch.h"

#include <errno.h>

#include <new>

#include "clock.h"
#include "log.h"

namespace abortguard {

FlagWatcher::~FlagWatcher() {
    Monitor::TimerId t, n, b;
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;  // a tick running now does not re-arm
        t = timer_;
        n = nudge_;
        b = burst_;
        entries_.clear();
        pending_ = 0;
        waiting_.store(0, std::memory_order_relaxed);
    }
    if (t != 0)
        monitor_.cancel_timer(t);  // waits for it if it is running
    if (n != 0)
        monitor_.cancel_timer(n);
    if (b != 0)
        monitor_.cancel_timer(b);
}

void FlagWatcher::schedule_locked(int64_t at, Monitor::TimerFn fn,
                                  Monitor::TimerId* slot) noexcept {
    Monitor::TimerId t = 0;
    *slot = monitor_.add_timer(at, fn, this, &t).is_ok() ? t : 0;
}

void FlagWatcher::nudge() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_ != 0 && nudge_ == 0 && !stopping_)
        schedule_locked(mono_ns(), nudged_thunk, &nudge_);
}

constexpr int kBurstChecks = 5;
constexpr int64_t kFirstBurstGapNs = 500 * 1000;

void FlagWatcher::nudge_soon() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_ == 0 || stopping_)
        return;
    burst_left_ = kBurstChecks;
    burst_gap_ns_ = kFirstBurstGapNs;
    if (burst_ == 0)
        schedule_locked(mono_ns() + kFirstBurstGapNs, burst_thunk, &burst_);
}

void FlagWatcher::nudged() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    nudge_ = 0;
    if (!stopping_)
        check_locked(mono_ns());
}

void FlagWatcher::burst() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    burst_ = 0;
    if (stopping_)
        return;
    const int64_t now = mono_ns();
    check_locked(now);
    if (--burst_left_ > 0 && pending_ > 0) {
        burst_gap_ns_ *= 2;
        schedule_locked(now + burst_gap_ns_ / 2, burst_thunk, &burst_);
    }
}

Status FlagWatcher::watch(const unsigned* flag, Reason reason, Token* token, Monitor::AbortFn fn,
                          void* arg, Id* id) {
    try {
        std::lock_guard<std::mutex> lock(mu_);
        const Id mine = next_id_++;
        entries_.emplace(mine, Entry{flag, reason, token, fn, arg, false});
        if (timer_ == 0 && !schedule_locked()) {
            entries_.erase(mine);
            return Status::from_errno(ENOMEM, "adding the flag poll timer");
        }
        ++pending_;
        waiting_.store(pending_, std::memory_order_relaxed);
        *id = mine;
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "watching a flag");
    }
}

// No cancel_timer() here: the pending tick finds nothing left to poll and
// does not re-arm, so there is at most one wake-up after the last unwatch.
void FlagWatcher::unwatch(Id id) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end())
        return;
    if (!it->second.fired)
        --pending_;
    waiting_.store(pending_, std::memory_order_relaxed);
    entries_.erase(it);
}

size_t FlagWatcher::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.size();
}

bool FlagWatcher::polling() const {
    std::lock_guard<std::mutex> lock(mu_);
    return timer_ != 0;
}

bool FlagWatcher::schedule_locked() noexcept {
    Monitor::TimerId t = 0;
    if (!monitor_.add_timer(mono_ns() + interval_ns_, tick_thunk, this, &t).is_ok()) {
        timer_ = 0;
        return false;
    }
    timer_ = t;
    return true;
}

void FlagWatcher::check_locked(int64_t now) noexcept {
    for (auto& [id, e] : entries_) {
        if (e.fired || __atomic_load_n(e.flag, __ATOMIC_RELAXED) == 0)
            continue;
        e.fired = true;
        --pending_;
        waiting_.store(pending_, std::memory_order_relaxed);
        const bool first = e.token->abort(e.reason, now);
        AG_LOG(kDebug, "AG0108: watched flag set (%s)", reason_name(e.reason));
        if (first && e.fn != nullptr)
            e.fn(e.arg, static_cast<int>(e.reason));
    }
}

void FlagWatcher::tick() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_)
        return;
    check_locked(mono_ns());
    if (pending_ == 0) {
        timer_ = 0;
    } else if (!schedule_locked()) {
        AG_LOG(kWarn,
               "AG0107: cannot re-arm the flag poll timer; %zu watched flag(s) are "
               "seen only when their requests end",
               pending_);
    }
}

}  // namespace abortguard
