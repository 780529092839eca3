// TimerQueue: one-shot timers run by the monitor thread (grace periods,
// polled sources such as HTTP/2 streams' aborted flags).
//
// Thread contract: add() and cancel() from any thread, including from inside
// a timer callback (a callback may re-arm itself). run_due() only from the
// one runner thread. cancel() is synchronous like Monitor::unwatch(): when it
// returns, the callback is not running and will not run — except when
// called by the callback itself, where it returns at once.
#ifndef ABORTGUARD_TIMER_QUEUE_H
#define ABORTGUARD_TIMER_QUEUE_H

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

namespace abortguard {

class TimerQueue {
  public:
    using Fn = void (*)(void* arg);
    using Id = uint64_t;  // 0 is never a valid id

    TimerQueue() = default;
    TimerQueue(const TimerQueue&) = delete;
    TimerQueue& operator=(const TimerQueue&) = delete;

    // Runs fn(arg) once, on the runner thread, at or after CLOCK_MONOTONIC
    // `deadline_ns`. `*earliest` (may be null) tells whether it is now the
    // first timer due, i.e. whether a sleeping runner must be woken. Throws
    // std::bad_alloc.
    Id add(int64_t deadline_ns, Fn fn, void* arg, bool* earliest = nullptr);

    // Unknown, expired or already cancelled ids are ignored.
    void cancel(Id id) noexcept;

    // INT64_MAX when no timer is pending.
    int64_t next_deadline() const;
    size_t size() const;

    // Runs, one at a time and without the lock held, every timer due at
    // `now_ns`.
    void run_due(int64_t now_ns) noexcept;

  private:
    struct Entry {
        Fn fn;
        void* arg;
    };

    mutable std::mutex mu_;
    std::condition_variable done_;                         // firing_ changed
    std::map<std::pair<int64_t, Id>, Entry> by_deadline_;  // guarded by mu_
    std::unordered_map<Id, int64_t> deadline_of_;          // guarded by mu_
    Id next_id_ = 1;                                       // guarded by mu_
    Id firing_ = 0;                                        // guarded by mu_
    std::thread::id runner_;                               // guarded by mu_
};

}  // namespace abortguard

#endif  // ABORTGUARD_TIMER_QUEUE_H
