#include <gtest/gtest.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"
#include "token.h"

using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::Token;

namespace {

constexpr int64_t kMs = 1000000;

TEST(Token, StartsRunning) {
    Token t;
    EXPECT_FALSE(t.aborted());
    EXPECT_EQ(t.reason(), Reason::kNone);
    EXPECT_EQ(t.aborted_at_ns(), 0);
}

TEST(Token, FirstAbortWinsAndKeepsItsReasonAndTime) {
    Token t;
    EXPECT_TRUE(t.abort(Reason::kRst, 42));
    EXPECT_FALSE(t.abort(Reason::kFin, 99));
    EXPECT_TRUE(t.aborted());
    EXPECT_EQ(t.reason(), Reason::kRst);
    EXPECT_EQ(t.aborted_at_ns(), 42);
}

TEST(Token, ExactlyOneOfManyConcurrentAbortsWins) {
    for (int round = 0; round < 200; ++round) {
        Token t;
        std::atomic<int> winners{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; ++i) {
            threads.emplace_back([&, i] {
                if (t.abort(i % 2 ? Reason::kFin : Reason::kRst, i + 1))
                    winners.fetch_add(1);
            });
        }
        for (auto& th : threads)
            th.join();
        ASSERT_EQ(winners.load(), 1);
        // Reason and time come from the same (winning) call.
        EXPECT_EQ(t.reason(), t.aborted_at_ns() % 2 == 0 ? Reason::kFin : Reason::kRst);
    }
}

TEST(Token, WaitTimesOutWhenNobodyAborts) {
    Token t;
    const int64_t start = mono_ns();
    EXPECT_FALSE(t.wait_until(start + 30 * kMs));
    EXPECT_GE(mono_ns() - start, 30 * kMs);
}

TEST(Token, WaitReturnsAtOnceWhenAlreadyAborted) {
    Token t;
    t.abort(Reason::kFin, mono_ns());
    const int64_t start = mono_ns();
    EXPECT_TRUE(t.wait_until(start + 10000 * kMs));
    EXPECT_LT(mono_ns() - start, 1000 * kMs);
}

TEST(Token, WaitWakesWhenAnotherThreadAborts) {
    Token t;
    std::atomic<bool> waiting{false};
    std::atomic<int64_t> woke_at{0};
    std::thread waiter([&] {
        waiting.store(true);
        EXPECT_TRUE(t.wait_until(mono_ns() + 10000 * kMs));
        woke_at.store(mono_ns());
    });
    while (!waiting.load())
        std::this_thread::yield();
    const int64_t aborted_at = mono_ns();
    t.abort(Reason::kRst, aborted_at);
    waiter.join();
    // Loose bound: it woke on the abort, not on its 10 s deadline.
    EXPECT_LT(woke_at.load() - aborted_at, 1000 * kMs);
}

TEST(Token, ManyWaitersAllWake) {
    Token t;
    std::atomic<int> woken{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 8; ++i) {
        waiters.emplace_back([&] {
            if (t.wait_until(mono_ns() + 10000 * kMs))
                woken.fetch_add(1);
        });
    }
    t.abort(Reason::kFin, mono_ns());
    for (auto& th : waiters)
        th.join();
    EXPECT_EQ(woken.load(), 8);
}

}  // namespace

namespace {

TEST(TokenCallbacks, RunOnceOnTheAbortingThreadInOrder) {
    Token t;
    std::vector<int> order;
    std::thread::id ran_on;
    t.on_abort([&](Reason r) {
        EXPECT_EQ(r, Reason::kRst);
        order.push_back(1);
        ran_on = std::this_thread::get_id();
    });
    t.on_abort([&](Reason) { order.push_back(2); });
    std::thread aborter([&] { t.abort(Reason::kRst, mono_ns()); });
    const auto aborter_id = aborter.get_id();
    aborter.join();
    t.abort(Reason::kFin, mono_ns());
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
    EXPECT_EQ(ran_on, aborter_id);
}

TEST(TokenCallbacks, LateCallbackRunsAtOnceAndNeverWithoutAbort) {
    Token quiet;
    int quiet_calls = 0;
    quiet.on_abort([&](Reason) { ++quiet_calls; });
    Token t;
    t.abort(Reason::kFin, mono_ns());
    Reason seen = Reason::kNone;
    t.on_abort([&](Reason r) { seen = r; });
    EXPECT_EQ(seen, Reason::kFin);
    EXPECT_EQ(quiet_calls, 0);
}

TEST(TokenCallbacks, ExceptionsAreContained) {
    Token t;
    int after = 0;
    t.on_abort([](Reason) { throw std::runtime_error("x"); });
    t.on_abort([&](Reason) { ++after; });
    EXPECT_TRUE(t.abort(Reason::kFin, mono_ns()));
    EXPECT_EQ(after, 1);
}

TEST(TokenCallbacks, ExactlyOnceWhenRegisteringRacesWithAbort) {
    for (int round = 0; round < 500; ++round) {
        Token t;
        std::atomic<int> calls{0};
        std::thread adder([&] {
            for (int i = 0; i < 10; ++i)
                t.on_abort([&](Reason) { calls.fetch_add(1); });
        });
        t.abort(Reason::kRst, mono_ns());
        adder.join();
        ASSERT_EQ(calls.load(), 10);
    }
}

TEST(Token, WaitWakesWithin10msOfAnAbort) {
    Token t;
    std::atomic<bool> waiting{false};
    int64_t woke_at = 0;
    std::thread waiter([&] {
        waiting.store(true);
        t.wait_until(mono_ns() + 10000 * kMs);
        woke_at = mono_ns();
    });
    while (!waiting.load())
        std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let it block
    const int64_t aborted_at = mono_ns();
    t.abort(Reason::kFin, aborted_at);
    waiter.join();
    EXPECT_LT(woke_at - aborted_at, 10 * kMs);
}

}  // namespace

// ---- the stop notice

namespace {

TEST(TokenStop, IsNotAnAbortAndHappensOnce) {
    Token t;
    EXPECT_FALSE(t.stopping());
    EXPECT_TRUE(t.stop());
    EXPECT_FALSE(t.stop());
    EXPECT_TRUE(t.stopping());
    EXPECT_FALSE(t.aborted());
    EXPECT_EQ(t.reason(), Reason::kNone);
}

TEST(TokenStop, EndsAWaitInProgressAtOnce) {
    Token t;
    std::atomic<bool> waiting{false};
    Token::Wake got = Token::Wake::kTimeout;
    int64_t woke_after = 0;
    std::thread waiter([&] {
        waiting = true;
        const int64_t start = mono_ns();
        got = t.wait_event(start + 10000 * kMs);
        woke_after = mono_ns() - start;
    });
    while (!waiting)
        std::this_thread::yield();
    t.stop();
    waiter.join();
    EXPECT_EQ(got, Token::Wake::kStopped);
    EXPECT_LT(woke_after, 5000 * kMs);
}

// A loop that only knows "aborted" and "timeout" must not spin once the
// notice was given: it is reported to one wait, later ones sleep.
TEST(TokenStop, IsReportedOnceToTheWaitsThatFollowIt) {
    Token t;
    t.stop();
    EXPECT_EQ(t.wait_event(mono_ns()), Token::Wake::kStopped);
    const int64_t start = mono_ns();
    EXPECT_EQ(t.wait_event(start + 20 * kMs), Token::Wake::kTimeout);
    EXPECT_GE(mono_ns() - start, 20 * kMs);
}

TEST(TokenStop, AnAbortAfterItWinsAndKeepsTheStop) {
    Token t;
    t.stop();
    EXPECT_TRUE(t.abort(Reason::kServerStop, 5));
    EXPECT_TRUE(t.aborted());
    EXPECT_TRUE(t.stopping());
    EXPECT_EQ(t.reason(), Reason::kServerStop);
    EXPECT_EQ(t.wait_event(mono_ns() + 1000 * kMs), Token::Wake::kAborted);
}

// Lock acquisition waits for aborts only.
TEST(TokenStop, DoesNotEndAnAbortOnlyWait) {
    Token t;
    std::atomic<bool> waiting{false};
    bool result = true;
    int64_t waited = 0;
    std::thread waiter([&] {
        waiting = true;
        const int64_t start = mono_ns();
        result = t.wait_until(start + 50 * kMs);
        waited = mono_ns() - start;
    });
    while (!waiting)
        std::this_thread::yield();
    t.stop();
    waiter.join();
    EXPECT_FALSE(result);
    EXPECT_GE(waited, 50 * kMs);
}

TEST(TokenStop, ConcurrentStopAndAbortKeepBoth) {
    for (int round = 0; round < 200; ++round) {
        Token t;
        std::thread a([&] { t.abort(Reason::kRst, 1); });
        std::thread s([&] { t.stop(); });
        a.join();
        s.join();
        ASSERT_TRUE(t.aborted());
        ASSERT_TRUE(t.stopping());
        ASSERT_EQ(t.reason(), Reason::kRst);
    }
}

TEST(TokenHook, TellsTheOwnerOnceAfterTheCallbacks) {
    struct Seen {
        int hook_calls = 0;
        Reason reason = Reason::kNone;
        bool callback_first = false;
        bool callback_ran = false;
    } seen;
    const Token::OwnerHook hook = [](void* owner, Reason r) {
        auto* s = static_cast<Seen*>(owner);
        ++s->hook_calls;
        s->reason = r;
        s->callback_first = s->callback_ran;
    };
    {
        Token t;
        t.set_owner(&seen, hook);
        t.on_abort([&](Reason) { seen.callback_ran = true; });
        t.abort(Reason::kFin, 1);
        t.abort(Reason::kRst, 2);
        Token unowned;  // no owner: nobody is told
        unowned.abort(Reason::kRst, 3);
    }
    EXPECT_EQ(seen.hook_calls, 1);
    EXPECT_EQ(seen.reason, Reason::kFin);
    EXPECT_TRUE(seen.callback_first) << "the owner's bookkeeping comes last";
    EXPECT_TRUE(seen.callback_ran);
}

}  // namespace

namespace {

// The monitor's batch: claim() publishes the abort and runs nothing; the
// callbacks registered before or between the halves run once, in notify().
TEST(TokenClaim, PublishesAtOnceAndNotifyRunsTheCallbacksOnce) {
    Token t;
    std::vector<int> ran;
    t.on_abort([&](Reason) { ran.push_back(1); });
    ASSERT_TRUE(t.claim(Reason::kFin, 42));
    EXPECT_TRUE(t.aborted());
    EXPECT_EQ(t.reason(), Reason::kFin);
    EXPECT_EQ(t.aborted_at_ns(), 42);
    EXPECT_TRUE(ran.empty()) << "claim() ran a callback";
    EXPECT_FALSE(t.claim(Reason::kRst, 43)) << "a second claim won";
    EXPECT_FALSE(t.abort(Reason::kRst, 44)) << "an abort after the claim won";
    t.on_abort([&](Reason) { ran.push_back(2); });
    EXPECT_EQ(ran.size(), 0u) << "a callback added between the halves ran early";
    t.notify();
    EXPECT_EQ(ran, (std::vector<int>{1, 2}));
    t.on_abort([&](Reason r) { ran.push_back(r == Reason::kFin ? 3 : -1); });
    EXPECT_EQ(ran, (std::vector<int>{1, 2, 3}));
}

// A waiter asleep in the futex when the claim comes is woken by notify():
// it wakes long before its 10 s deadline.
TEST(TokenClaim, ASleepingWaiterWakesOnNotify) {
    Token t;
    std::atomic<pid_t> tid{0};
    std::atomic<int64_t> woke_at{0};
    std::thread waiter([&] {
        tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
        EXPECT_TRUE(t.wait_until(mono_ns() + 10000 * kMs));
        woke_at.store(mono_ns());
    });
    while (tid.load() == 0)
        std::this_thread::yield();
    // Asleep: its state in /proc is 'S' (the futex wait, its only sleep).
    const std::string stat = "/proc/self/task/" + std::to_string(tid.load()) + "/stat";
    for (;;) {
        std::ifstream in(stat);
        std::string line;
        std::getline(in, line);
        const auto paren = line.rfind(')');
        if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'S')
            break;
        std::this_thread::yield();
    }
    ASSERT_TRUE(t.claim(Reason::kRst, mono_ns()));
    const int64_t notified = mono_ns();
    t.notify();
    waiter.join();
    EXPECT_LT(woke_at.load() - notified, 1000 * kMs) << "notify() did not wake the waiter";
}

}  // namespace

TEST(Token, AWaitWithTheLargestTimeoutEndsOnlyAtTheAbort) {
    Token t;
    std::thread aborter([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        t.abort(Reason::kFin, mono_ns());
    });
    const int64_t start = mono_ns();
    EXPECT_TRUE(t.wait_until(abortguard::deadline_after(INT64_MAX)));
    EXPECT_GE(mono_ns() - start, 90 * 1000000);
    aborter.join();
}
