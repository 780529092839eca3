// The monitor against real TCP connections on 127.0.0.1.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "clock.h"
#include "monitor.h"
#include "sockets.h"

using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::Token;
using agtest::Fd;

namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kPatience = 5000 * kMs;  // only reached when a test fails

struct Calls {
    std::atomic<int> count{0};
    std::atomic<int> reason{-1};
    static void record(void* arg, int reason) {
        auto* self = static_cast<Calls*>(arg);
        self->reason.store(reason);
        self->count.fetch_add(1);
    }
};

class MonitorTest : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_TRUE(Monitor::create(&monitor_).is_ok()); }

    Monitor::WatchId watch(const Fd& fd, Token* token, Calls* calls, unsigned flags = 0) {
        Monitor::WatchId id = 0;
        EXPECT_TRUE(monitor_->watch(fd.get(), flags, token, Calls::record, calls, &id).is_ok());
        EXPECT_NE(id, 0u);
        return id;
    }

    static bool fires(const Token& token) { return token.wait_until(mono_ns() + kPatience); }

    // Proves the monitor has processed every event queued before this
    // call: a fresh connection is reset and its token awaited. Events are
    // handled in arrival order by one thread, so anything that would have
    // fired earlier has fired by then.
    void drain_events() {
        auto [client, server] = listener_.connect_pair();
        Token sentinel;
        Calls calls;
        const auto id = watch(server, &sentinel, &calls);
        agtest::close_with_rst(client);
        ASSERT_TRUE(fires(sentinel));
        monitor_->unwatch(id);
    }

    agtest::Listener listener_;
    std::unique_ptr<Monitor> monitor_;
};

TEST_F(MonitorTest, FinAbortsTheTokenAndCallsBackOnce) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    const int64_t closed_at = mono_ns();
    client.reset();
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kFin);
    EXPECT_GE(token.aborted_at_ns(), closed_at);
    monitor_->unwatch(id);
    EXPECT_EQ(calls.count.load(), 1);
    EXPECT_EQ(calls.reason.load(), static_cast<int>(Reason::kFin));
}

TEST_F(MonitorTest, RstIsReportedAsRst) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    agtest::close_with_rst(client);
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kRst);
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, HalfCloseIsAnAbortByDefault) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    agtest::half_close(client);
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kFin);
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, IgnoredHalfCloseStillSeesTheLaterReset) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls, Monitor::kIgnoreHalfClose);
    agtest::half_close(client);
    drain_events();
    EXPECT_FALSE(token.aborted()) << "a FIN alone must not abort";
    agtest::close_with_rst(client);
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kRst);
    monitor_->unwatch(id);
}

// A tunnel's owner shuts our side down when the far end finished: once the
// client closes its side too, the socket reports HUP without an error.
TEST_F(MonitorTest, ATunnelClosedInOrderOnBothSidesIsNoAbort) {
    for (const bool tunnel : {true, false}) {
        SCOPED_TRACE(tunnel ? "kTunnel" : "without kTunnel (contrast)");
        auto [client, server] = listener_.connect_pair();
        Token token;
        Calls calls;
        const unsigned flags = Monitor::kIgnoreHalfClose | (tunnel ? Monitor::kTunnel : 0u);
        const auto id = watch(server, &token, &calls, flags);
        shutdown(server.get(), SHUT_WR);  // the tunnel forwards the backend's end
        client.reset();                   // the client ends its side: FIN
        drain_events();
        EXPECT_EQ(token.aborted(), !tunnel);
        monitor_->unwatch(id);
    }
}

TEST_F(MonitorTest, ATunnelsClientThatResetsIsStillAnAbort) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls, Monitor::kIgnoreHalfClose | Monitor::kTunnel);
    agtest::half_close(client);
    drain_events();
    EXPECT_FALSE(token.aborted());
    agtest::close_with_rst(client);
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kRst);
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, DataFromTheClientIsNotAnAbort) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    ASSERT_EQ(::write(client.get(), "GET / HTTP/1.1\r\n\r\n", 18), 18);
    char buf[64];
    ASSERT_EQ(::read(server.get(), buf, sizeof buf), 18);  // it has arrived
    drain_events();
    EXPECT_FALSE(token.aborted());
    EXPECT_EQ(calls.count.load(), 0);
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, AlreadyClosedPeerFiresAtOnce) {
    auto [client, server] = listener_.connect_pair();
    client.reset();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    ASSERT_TRUE(fires(token));
    EXPECT_EQ(token.reason(), Reason::kFin);
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, NoCallbackAfterUnwatch) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    monitor_->unwatch(watch(server, &token, &calls));
    client.reset();
    drain_events();
    EXPECT_FALSE(token.aborted());
    EXPECT_EQ(calls.count.load(), 0);
}

TEST_F(MonitorTest, UnwatchIsIdempotentAndIgnoresUnknownIds) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    EXPECT_EQ(monitor_->watch_count(), 1u);
    monitor_->unwatch(id);
    monitor_->unwatch(id);
    monitor_->unwatch(id + 12345);
    EXPECT_EQ(monitor_->watch_count(), 0u);
}

TEST_F(MonitorTest, TheSameFdCanBeWatchedAgainAfterUnwatch) {
    auto [client, server] = listener_.connect_pair();
    Token first, second;
    Calls calls;
    monitor_->unwatch(watch(server, &first, &calls));
    const auto id = watch(server, &second, &calls);  // keep-alive: next request
    client.reset();
    ASSERT_TRUE(fires(second));
    EXPECT_FALSE(first.aborted());
    monitor_->unwatch(id);
}

// The registration a finished watch leaves parked must not outlive its
// socket's meaning: the same fd number, now another connection, is watched
// afresh (the number is forced with dup2), with and without the hint.
TEST_F(MonitorTest, AReusedFdNumberIsWatchedAfresh) {
    for (unsigned hint : {0u, unsigned{Monitor::kFreshSocket}}) {
        auto [old_client, old_server] = listener_.connect_pair();
        const int number = old_server.get();
        Token first;
        Calls calls;
        monitor_->unwatch(watch(old_server, &first, &calls));
        auto [client, server] = listener_.connect_pair();
        Fd reused(old_server.release());
        ASSERT_EQ(dup2(server.get(), number), number);  // closes the old socket
        Token second;
        const auto id = watch(reused, &second, &calls, hint);
        old_client.reset();  // the old peer leaving must not matter
        client.reset();
        ASSERT_TRUE(fires(second));
        EXPECT_FALSE(first.aborted());
        monitor_->unwatch(id);
    }
}

// Keep-alive: each request of a connection watches the same socket; the
// registration is taken over (kSameSocket) and still reports the close.
TEST_F(MonitorTest, TheSameConnectionsNextRequestsStillSeeTheClose) {
    auto [client, server] = listener_.connect_pair();
    Calls calls;
    Token first, second, third;
    monitor_->unwatch(watch(server, &first, &calls, Monitor::kFreshSocket));
    monitor_->unwatch(watch(server, &second, &calls, Monitor::kSameSocket));
    const auto id = watch(server, &third, &calls, Monitor::kSameSocket);
    client.reset();
    ASSERT_TRUE(fires(third));
    EXPECT_FALSE(first.aborted());
    EXPECT_FALSE(second.aborted());
    monitor_->unwatch(id);
}

// The parked registration fired between two requests (one-shot: now
// disabled in the kernel); the next request must re-arm it, not trust it.
TEST_F(MonitorTest, ARegistrationThatFiredWhileParkedIsReArmed) {
    auto [client, server] = listener_.connect_pair();
    Calls calls;
    Token first, second;
    monitor_->unwatch(watch(server, &first, &calls, Monitor::kFreshSocket));
    agtest::half_close(client);
    drain_events();  // the parked registration's event has been consumed
    const auto id = watch(server, &second, &calls, Monitor::kSameSocket);
    ASSERT_TRUE(fires(second)) << "a disabled registration was taken over";
    EXPECT_EQ(second.reason(), Reason::kFin);
    EXPECT_FALSE(first.aborted());
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, AStaleIdDoesNotRemoveTheNextWatch) {
    auto [client, server] = listener_.connect_pair();
    Calls calls;
    Token first, second;
    const auto old_id = watch(server, &first, &calls, Monitor::kFreshSocket);
    monitor_->unwatch(old_id);
    const auto id = watch(server, &second, &calls, Monitor::kSameSocket);
    EXPECT_NE(id, old_id);
    monitor_->unwatch(old_id);  // a late duplicate from the previous request
    EXPECT_EQ(monitor_->watch_count(), 1u);
    client.reset();
    ASSERT_TRUE(fires(second));
    monitor_->unwatch(id);
}

TEST_F(MonitorTest, UnwatchWaitsForARunningCallback) {
    struct Blocking {
        std::atomic<bool> entered{false};
        std::atomic<bool> release{false};
        std::atomic<int> seq{0};
        int callback_done = 0;
        static void run(void* arg, int) {
            auto* self = static_cast<Blocking*>(arg);
            self->entered.store(true);
            while (!self->release.load())
                std::this_thread::yield();
            self->callback_done = self->seq.fetch_add(1) + 1;
        }
    } b;
    auto [client, server] = listener_.connect_pair();
    Token token;
    Monitor::WatchId id = 0;
    ASSERT_TRUE(monitor_->watch(server.get(), 0, &token, Blocking::run, &b, &id).is_ok());
    client.reset();
    while (!b.entered.load())
        std::this_thread::yield();
    int unwatch_done = 0;
    std::thread remover([&] {
        monitor_->unwatch(id);
        unwatch_done = b.seq.fetch_add(1) + 1;
    });
    // Give a broken unwatch() the chance to return early; then let go.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    b.release.store(true);
    remover.join();
    EXPECT_EQ(b.callback_done, 1);
    EXPECT_EQ(unwatch_done, 2) << "unwatch() returned while its callback was running";
}

TEST_F(MonitorTest, AThousandWatchesAllFireWithTheirOwnReason) {
    agtest::raise_fd_limit(4096);
    constexpr int kN = 1000;
    std::vector<std::pair<Fd, Fd>> pairs;
    std::vector<Token> tokens(kN);
    std::vector<Calls> calls(kN);
    std::vector<Monitor::WatchId> ids;
    for (int i = 0; i < kN; ++i) {
        pairs.push_back(listener_.connect_pair());
        ids.push_back(watch(pairs[i].second, &tokens[i], &calls[i]));
    }
    EXPECT_EQ(monitor_->watch_count(), static_cast<size_t>(kN));
    for (int i = 0; i < kN; ++i) {
        if (i % 2)
            agtest::close_with_rst(pairs[i].first);
        else
            pairs[i].first.reset();
    }
    for (int i = 0; i < kN; ++i) {
        ASSERT_TRUE(fires(tokens[i])) << i;
        EXPECT_EQ(tokens[i].reason(), i % 2 ? Reason::kRst : Reason::kFin) << i;
    }
    for (auto id : ids)
        monitor_->unwatch(id);
    for (int i = 0; i < kN; ++i)
        EXPECT_EQ(calls[i].count.load(), 1) << i;
    EXPECT_EQ(monitor_->watch_count(), 0u);
}

TEST_F(MonitorTest, StopIsBoundedAndWatchFailsAfterwards) {
    EXPECT_TRUE(monitor_->stop(1000 * kMs));
    auto [client, server] = listener_.connect_pair();
    Token token;
    Monitor::WatchId id = 0;
    EXPECT_FALSE(monitor_->watch(server.get(), 0, &token, nullptr, nullptr, &id).is_ok());
    EXPECT_TRUE(monitor_->stop(1000 * kMs));  // twice is fine
}

TEST_F(MonitorTest, UnwatchStillWorksAfterStop) {
    auto [client, server] = listener_.connect_pair();
    Token token;
    Calls calls;
    const auto id = watch(server, &token, &calls);
    ASSERT_TRUE(monitor_->stop(1000 * kMs));
    monitor_->unwatch(id);
    EXPECT_EQ(monitor_->watch_count(), 0u);
}

}  // namespace
