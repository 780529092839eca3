#include "flag_watch.h"

#include <errno.h>

#include <new>

#include "clock.h"
#include "log.h"

namespace abortguard {

FlagWatcher::~FlagWatcher() {
    Monitor::TimerId t;
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;  // a tick running now does not re-arm
        t = timer_;
        entries_.clear();
        pending_ = 0;
    }
    if (t != 0)
        monitor_.cancel_timer(t);  // waits for it if it is running
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

void FlagWatcher::tick() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_)
        return;
    const int64_t now = mono_ns();
    for (auto& [id, e] : entries_) {
        if (e.fired || __atomic_load_n(e.flag, __ATOMIC_RELAXED) == 0)
            continue;
        e.fired = true;
        --pending_;
        const bool first = e.token->abort(e.reason, now);
        AG_LOG(kDebug, "AG0108: watched flag set (%s)", reason_name(e.reason));
        if (first && e.fn != nullptr)
            e.fn(e.arg, static_cast<int>(e.reason));
    }
    if (pending_ == 0) {
        timer_ = 0;
    } else if (!schedule_locked()) {
        AG_LOG(kWarn, "AG0107: cannot re-arm the flag poll timer; %zu watched flag(s) are "
                      "seen only when their requests end",
               pending_);
    }
}

}  // namespace abortguard
