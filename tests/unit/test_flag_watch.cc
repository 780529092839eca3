// FlagWatcher: flags polled on the monitor thread only while watched.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "clock.h"
#include "flag_watch.h"
#include "monitor.h"

using abortguard::FlagWatcher;
using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::Token;

namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kPatience = 5000 * kMs;  // only reached when a test fails

struct Calls {
    std::atomic<int> count{0};
    std::atomic<int> reason{-1};
    std::atomic<bool> on_test_thread{false};
    std::thread::id test_thread = std::this_thread::get_id();
    static void record(void* arg, int reason) {
        auto* self = static_cast<Calls*>(arg);
        self->reason = reason;
        self->on_test_thread = std::this_thread::get_id() == self->test_thread;
        self->count.fetch_add(1);
    }
};

void set_flag(unsigned* flag) {
    __atomic_store_n(flag, 1u, __ATOMIC_RELAXED);
}

class FlagWatchTest : public ::testing::Test {
  protected:
    void SetUp() override {
        ASSERT_TRUE(Monitor::create(&monitor_).is_ok());
        // A short fallback poll: these tests are about the poll.
        flags_ = std::make_unique<FlagWatcher>(*monitor_, 10 * kMs);
    }
    void TearDown() override {
        flags_.reset();
        monitor_.reset();
    }

    FlagWatcher::Id watch(unsigned* flag, Token* token, Calls* calls) {
        FlagWatcher::Id id = 0;
        EXPECT_TRUE(
            flags_->watch(flag, Reason::kH2Reset, token, Calls::record, calls, &id).is_ok());
        EXPECT_NE(id, 0u);
        return id;
    }

    // Bounded wait for the poll timer to stop (one trailing tick).
    bool stops_polling() {
        const int64_t deadline = mono_ns() + kPatience;
        while (flags_->polling()) {
            if (mono_ns() > deadline)
                return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    std::unique_ptr<Monitor> monitor_;
    std::unique_ptr<FlagWatcher> flags_;
};

TEST_F(FlagWatchTest, ASetFlagAbortsItsTokenOnTheMonitorThread) {
    unsigned flag = 0;
    Token token;
    Calls calls;
    const auto id = watch(&flag, &token, &calls);
    const int64_t set_at = mono_ns();
    set_flag(&flag);
    ASSERT_TRUE(token.wait_until(mono_ns() + kPatience));
    EXPECT_EQ(token.reason(), Reason::kH2Reset);
    // About one poll interval (10 ms); loose for a loaded machine.
    EXPECT_LT(token.aborted_at_ns() - set_at, 500 * kMs);
    flags_->unwatch(id);
    EXPECT_EQ(calls.count.load(), 1);
    EXPECT_EQ(calls.reason.load(), static_cast<int>(Reason::kH2Reset));
    EXPECT_FALSE(calls.on_test_thread.load());
}

TEST_F(FlagWatchTest, OnlyTheSetFlagFires) {
    unsigned a = 0, b = 0;
    Token ta, tb;
    Calls ca, cb;
    const auto ida = watch(&a, &ta, &ca);
    const auto idb = watch(&b, &tb, &cb);
    set_flag(&a);
    ASSERT_TRUE(ta.wait_until(mono_ns() + kPatience));
    // b's poll ran with a's (same tick) and later ticks keep polling it.
    EXPECT_TRUE(flags_->polling());
    EXPECT_FALSE(tb.aborted());
    flags_->unwatch(ida);
    flags_->unwatch(idb);
    EXPECT_FALSE(tb.aborted());
    EXPECT_EQ(cb.count.load(), 0);
}

TEST_F(FlagWatchTest, NoTimerWhileNothingIsWatched) {
    EXPECT_FALSE(flags_->polling());
    unsigned flag = 0;
    Token token;
    Calls calls;
    const auto id = watch(&flag, &token, &calls);
    EXPECT_TRUE(flags_->polling());
    flags_->unwatch(id);
    EXPECT_TRUE(stops_polling());
    EXPECT_EQ(flags_->size(), 0u);
    // A fired watch needs no more polling either, though still listed.
    unsigned fired = 0;
    Token ft;
    Calls fc;
    const auto fid = watch(&fired, &ft, &fc);
    set_flag(&fired);
    ASSERT_TRUE(ft.wait_until(mono_ns() + kPatience));
    EXPECT_TRUE(stops_polling());
    EXPECT_EQ(flags_->size(), 1u);
    flags_->unwatch(fid);
}

TEST_F(FlagWatchTest, NothingFiresAfterUnwatch) {
    unsigned flag = 0;
    Token token;
    Calls calls;
    unsigned other = 0;
    Token other_token;
    Calls other_calls;
    const auto id = watch(&flag, &token, &calls);
    const auto keep = watch(&other, &other_token, &other_calls);  // keeps the timer going
    flags_->unwatch(id);
    set_flag(&flag);
    set_flag(&other);
    ASSERT_TRUE(other_token.wait_until(mono_ns() + kPatience));  // a tick ran after the set
    EXPECT_FALSE(token.aborted());
    EXPECT_EQ(calls.count.load(), 0);
    flags_->unwatch(keep);
}

// Watches come and go from several threads while flags are set: every set
// flag of a live watch fires, nothing fires after its unwatch returned (the
// memory is poisoned right after), and the timer stops at the end.
TEST_F(FlagWatchTest, ConcurrentWatchersStress) {
    constexpr int kThreads = 4;
    constexpr int kRounds = 300;
    std::atomic<int> missed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kRounds; ++i) {
                auto flag = std::make_unique<unsigned>(0);
                auto token = std::make_unique<Token>();
                Calls calls;
                FlagWatcher::Id id = 0;
                ASSERT_TRUE(flags_
                                ->watch(flag.get(), Reason::kH2Reset, token.get(), Calls::record,
                                        &calls, &id)
                                .is_ok());
                if ((i + t) % 2 == 0) {
                    set_flag(flag.get());
                    if (i % 4 == 0)
                        flags_->nudge();  // as the HTTP/2 glue does
                    if (!token->wait_until(mono_ns() + kPatience))
                        missed.fetch_add(1);
                }
                flags_->unwatch(id);
                *flag = 0xdead;  // a poll after unwatch would fire on this
                token.reset();
            }
        });
    }
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(missed.load(), 0);
    EXPECT_TRUE(stops_polling());
}

}  // namespace

// The nudge carries the latency; the poll is only the fallback.
TEST(FlagWatchNudge, ANudgeChecksAtOnceWhereThePollWouldWait) {
    std::unique_ptr<Monitor> monitor;
    ASSERT_TRUE(Monitor::create(&monitor).is_ok());
    FlagWatcher flags(*monitor, 60000 * kMs);  // a fallback that never comes here
    unsigned flag = 0;
    Token token;
    FlagWatcher::Id id = 0;
    ASSERT_TRUE(flags.watch(&flag, Reason::kH2Reset, &token, nullptr, nullptr, &id).is_ok());
    __atomic_store_n(&flag, 1u, __ATOMIC_RELAXED);
    EXPECT_FALSE(token.wait_until(mono_ns() + 200 * kMs)) << "seen without a nudge";
    const int64_t nudged = mono_ns();
    flags.nudge();
    ASSERT_TRUE(token.wait_until(mono_ns() + kPatience));
    EXPECT_LT(token.aborted_at_ns() - nudged, 100 * kMs);  // loose; microseconds when idle
    flags.unwatch(id);
    flags.nudge();  // nothing watched: costs nothing, schedules nothing
}
