// Timers on the monitor thread.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "clock.h"
#include "monitor.h"

using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::Token;

namespace {

constexpr int64_t kMs = 1000000;

class TimerTest : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_TRUE(Monitor::create(&monitor_).is_ok()); }

    Monitor::TimerId add(int64_t in_ns, Monitor::TimerFn fn, void* arg) {
        Monitor::TimerId id = 0;
        EXPECT_TRUE(monitor_->add_timer(mono_ns() + in_ns, fn, arg, &id).is_ok());
        return id;
    }

    // Joins the monitor thread, so no callback still runs on the test's
    // locals (a waiter wakes while the aborting callback is finishing).
    void finish() { monitor_.reset(); }

    // A token aborted by a timer: something to wait for.
    static void abort_token(void* arg) {
        static_cast<Token*>(arg)->abort(abortguard::Reason::kError, mono_ns());
    }

    std::unique_ptr<Monitor> monitor_;
};

TEST_F(TimerTest, FiresOnTheMonitorThreadNotBeforeItsDeadline) {
    struct Probe {
        Token done;
        std::thread::id ran_on;
        int64_t ran_at = 0;
    } p;
    const int64_t deadline = mono_ns() + 30 * kMs;
    Monitor::TimerId id = 0;
    ASSERT_TRUE(monitor_
                    ->add_timer(
                        deadline,
                        [](void* arg) {
                            auto* self = static_cast<Probe*>(arg);
                            self->ran_on = std::this_thread::get_id();
                            self->ran_at = mono_ns();
                            abort_token(&self->done);
                        },
                        &p, &id)
                    .is_ok());
    ASSERT_TRUE(p.done.wait_until(mono_ns() + 5000 * kMs));
    EXPECT_GE(p.ran_at, deadline);
    EXPECT_LT(p.ran_at - deadline, 500 * kMs);  // loose
    EXPECT_NE(p.ran_on, std::this_thread::get_id());
    finish();
}

TEST_F(TimerTest, RunInDeadlineOrderAndAnEarlierTimerWakesTheMonitor) {
    struct Order {
        std::vector<int> seen;
        Token done;
    } o;
    struct Arg {
        Order* o;
        int n;
    } late{&o, 2}, early{&o, 1};
    auto record = [](void* arg) {
        auto* a = static_cast<Arg*>(arg);
        a->o->seen.push_back(a->n);
        if (a->n == 2)
            a->o->done.abort(abortguard::Reason::kError, mono_ns());
    };
    add(200 * kMs, record, &late);
    add(20 * kMs, record, &early);  // the monitor sleeps toward 200 ms: must wake
    const int64_t start = mono_ns();
    ASSERT_TRUE(o.done.wait_until(mono_ns() + 5000 * kMs));
    EXPECT_EQ(o.seen, (std::vector<int>{1, 2}));
    EXPECT_GE(mono_ns() - start, 190 * kMs);
    finish();
}

TEST_F(TimerTest, ACancelledTimerNeverRuns) {
    std::atomic<int> runs{0};
    const auto id = add(
        20 * kMs, [](void* arg) { static_cast<std::atomic<int>*>(arg)->fetch_add(1); }, &runs);
    monitor_->cancel_timer(id);
    Token later;
    add(60 * kMs, abort_token, &later);
    ASSERT_TRUE(later.wait_until(mono_ns() + 5000 * kMs));
    EXPECT_EQ(runs.load(), 0);
    monitor_->cancel_timer(id);  // twice, and after its deadline: harmless
    finish();
}

TEST_F(TimerTest, CancelWaitsForARunningCallback) {
    struct Blocking {
        std::atomic<bool> entered{false}, release{false};
        std::atomic<int> seq{0};
        int callback_done = 0;
    } b;
    const auto id = add(
        0,
        [](void* arg) {
            auto* self = static_cast<Blocking*>(arg);
            self->entered.store(true);
            while (!self->release.load())
                std::this_thread::yield();
            self->callback_done = self->seq.fetch_add(1) + 1;
        },
        &b);
    while (!b.entered.load())
        std::this_thread::yield();
    int cancel_done = 0;
    std::thread canceller([&] {
        monitor_->cancel_timer(id);
        cancel_done = b.seq.fetch_add(1) + 1;
    });
    // Give a broken cancel_timer() the chance to return early; then let go.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    b.release.store(true);
    canceller.join();
    EXPECT_EQ(b.callback_done, 1);
    EXPECT_EQ(cancel_done, 2);
}

// A polled source: the callback re-arms itself until it has run N times,
// and may cancel itself without deadlocking.
struct Repeater {
    Repeater(Monitor* m, int n) : monitor(m), left(n) {}
    Monitor* monitor;
    int left;
    Monitor::TimerId id = 0;  // the pending re-arm; monitor thread only
    Token done;
    static void tick(void* arg) {
        auto* self = static_cast<Repeater*>(arg);
        self->monitor->cancel_timer(self->id);  // from inside: returns at once
        if (--self->left == 0) {
            self->done.abort(abortguard::Reason::kError, mono_ns());
            return;
        }
        self->monitor->add_timer(mono_ns() + kMs, tick, self, &self->id);
    }
};

TEST_F(TimerTest, ACallbackCanReArmAndCancelItself) {
    Repeater r(monitor_.get(), 10);
    Monitor::TimerId first = 0;
    ASSERT_TRUE(monitor_->add_timer(mono_ns(), Repeater::tick, &r, &first).is_ok());
    ASSERT_TRUE(r.done.wait_until(mono_ns() + 5000 * kMs));
    EXPECT_EQ(r.left, 0);
    finish();
}

}  // namespace
