#include "timer_queue.h"

#include <climits>

namespace abortguard {

TimerQueue::Id TimerQueue::add(int64_t deadline_ns, Fn fn, void* arg, bool* earliest) {
    std::lock_guard<std::mutex> lock(mu_);
    const Id id = next_id_++;
    by_deadline_.emplace(std::make_pair(deadline_ns, id), Entry{fn, arg});
    try {
        deadline_of_.emplace(id, deadline_ns);
    } catch (...) {
        by_deadline_.erase(std::make_pair(deadline_ns, id));
        throw;
    }
    if (earliest != nullptr)
        *earliest = by_deadline_.begin()->first.second == id;
    return id;
}

void TimerQueue::cancel(Id id) noexcept {
    std::unique_lock<std::mutex> lock(mu_);
    // Wait out a running callback, unless we are that callback.
    if (runner_ != std::this_thread::get_id()) {
        done_.wait(lock, [&] { return firing_ != id; });
    }
    auto it = deadline_of_.find(id);
    if (it == deadline_of_.end())
        return;
    by_deadline_.erase(std::make_pair(it->second, id));
    deadline_of_.erase(it);
}

int64_t TimerQueue::next_deadline() const {
    std::lock_guard<std::mutex> lock(mu_);
    return by_deadline_.empty() ? INT64_MAX : by_deadline_.begin()->first.first;
}

size_t TimerQueue::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return by_deadline_.size();
}

void TimerQueue::run_due(int64_t now_ns) noexcept {
    std::unique_lock<std::mutex> lock(mu_);
    runner_ = std::this_thread::get_id();
    while (!by_deadline_.empty() && by_deadline_.begin()->first.first <= now_ns) {
        auto first = by_deadline_.begin();
        const Id id = first->first.second;
        const Entry e = first->second;
        by_deadline_.erase(first);
        deadline_of_.erase(id);
        firing_ = id;
        lock.unlock();
        e.fn(e.arg);
        lock.lock();
        firing_ = 0;
        done_.notify_all();
    }
}

}  // namespace abortguard
