// UpstreamCut against real TCP connections on 127.0.0.1: the "proxy" end is
// armed, the "backend" end observes the FIN the cut sends.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <random>
#include <thread>

#include "clock.h"
#include "sockets.h"
#include "upstream_cut.h"

using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::Token;
using abortguard::UpstreamCut;
using agtest::Fd;

namespace {

// True once `fd` reads end-of-file (the peer shut down its sending side),
// within `ms`; bytes before it are skipped.
bool sees_eof(const Fd& fd, int ms) {
    const int64_t deadline = mono_ns() + int64_t{ms} * 1000000;
    for (;;) {
        const int64_t left_ms = (deadline - mono_ns()) / 1000000;
        pollfd p{fd.get(), POLLIN, 0};
        if (poll(&p, 1, left_ms > 0 ? static_cast<int>(left_ms) : 0) != 1)
            return false;
        char buf[64];
        const ssize_t n = recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0)
            return false;
    }
}

// True while `fd` can still send (it was not shut down).
bool can_send(const Fd& fd) {
    return send(fd.get(), "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1;
}

struct Before {
    std::atomic<int> calls{0};
    std::atomic<bool> socket_open_when_called{false};
    int fd = -1;
    static void call(void* arg) {
        auto* self = static_cast<Before*>(arg);
        self->socket_open_when_called = can_send(Fd(dup(self->fd)));
        self->calls.fetch_add(1);
    }
};

class UpstreamCutTest : public ::testing::Test {
  protected:
    agtest::Listener listener_;
};

TEST_F(UpstreamCutTest, AbortShutsTheArmedSocketDownAfterCallingBefore) {
    auto [proxy, backend] = listener_.connect_pair();
    Token token;
    UpstreamCut cut(token);
    Before before;
    before.fd = proxy.get();
    UpstreamCut::ArmId id = 0;
    ASSERT_TRUE(cut.arm(proxy.get(), Before::call, &before, &id).is_ok());
    EXPECT_NE(id, 0u);
    EXPECT_FALSE(sees_eof(backend, 0));

    std::thread aborter([&] { token.abort(Reason::kFin, mono_ns()); });
    aborter.join();
    EXPECT_TRUE(sees_eof(backend, 2000)) << "the backend was not told";
    EXPECT_EQ(before.calls.load(), 1);
    EXPECT_TRUE(before.socket_open_when_called.load());
    EXPECT_FALSE(can_send(proxy));  // SHUT_RDWR
    EXPECT_TRUE(cut.disarm(id));
}

TEST_F(UpstreamCutTest, DisarmedSocketIsNeverTouched) {
    auto [proxy, backend] = listener_.connect_pair();
    Token token;
    UpstreamCut cut(token);
    UpstreamCut::ArmId id = 0;
    ASSERT_TRUE(cut.arm(proxy.get(), nullptr, nullptr, &id).is_ok());
    EXPECT_FALSE(cut.disarm(id));
    token.abort(Reason::kRst, mono_ns());
    EXPECT_TRUE(can_send(proxy));
    EXPECT_FALSE(sees_eof(backend, 50));
}

TEST_F(UpstreamCutTest, ArmingAnAbortedRequestCutsAtOnce) {
    auto [proxy, backend] = listener_.connect_pair();
    Token token;
    token.abort(Reason::kFin, mono_ns());
    UpstreamCut cut(token);
    UpstreamCut::ArmId id = 0;
    ASSERT_TRUE(cut.arm(proxy.get(), nullptr, nullptr, &id).is_ok());
    EXPECT_TRUE(sees_eof(backend, 2000));
    EXPECT_TRUE(cut.disarm(id));
}

TEST_F(UpstreamCutTest, RearmingReplacesAndAStaleDisarmIsIgnored) {
    auto [first, first_backend] = listener_.connect_pair();
    auto [second, second_backend] = listener_.connect_pair();
    Token token;
    UpstreamCut cut(token);
    UpstreamCut::ArmId id1 = 0, id2 = 0;
    ASSERT_TRUE(cut.arm(first.get(), nullptr, nullptr, &id1).is_ok());
    EXPECT_FALSE(cut.disarm(id1));
    ASSERT_TRUE(cut.arm(second.get(), nullptr, nullptr, &id2).is_ok());
    EXPECT_NE(id1, id2);
    EXPECT_FALSE(cut.disarm(id1));  // stale: the second stays armed
    token.abort(Reason::kFin, mono_ns());
    EXPECT_TRUE(sees_eof(second_backend, 2000));
    EXPECT_TRUE(can_send(first));
    EXPECT_TRUE(cut.disarm(id2));
}

// The safety property under a race: the aborting thread and the request
// thread's disarm-then-close run concurrently, and the closed descriptor's
// number is reused at once by a new connection. The new connection must
// never be shut down.
TEST_F(UpstreamCutTest, NoCutAfterDisarmWhileFdsAreReused) {
    std::mt19937 rng(12345);
    for (int i = 0; i < 2000; ++i) {
        // Both orders for certain, then the real race (whose order timing
        // decides: a sanitizer's slowdown can make it one-sided).
        enum { kAbortFirst, kDisarmFirst, kRace } const order = static_cast<decltype(kRace)>(i % 3);
        auto [proxy, backend] = listener_.connect_pair();
        const int number = proxy.get();
        Token token;
        UpstreamCut cut(token);
        UpstreamCut::ArmId id = 0;
        ASSERT_TRUE(cut.arm(proxy.get(), nullptr, nullptr, &id).is_ok());
        const int abort_spin = static_cast<int>(rng() % 2000);
        const int disarm_spin = static_cast<int>(rng() % 2000);
        std::atomic<bool> go{order != kDisarmFirst};
        std::atomic<bool> started{false};
        std::thread aborter([&] {
            started.store(true);
            while (!go.load())
                std::this_thread::yield();
            for (volatile int k = 0; k < abort_spin; ++k) {
            }
            token.abort(Reason::kFin, mono_ns());
        });
        if (order == kAbortFirst)
            aborter.join();
        while (!started.load())
            std::this_thread::yield();
        for (volatile int k = 0; k < disarm_spin; ++k) {
        }
        const bool was_cut = cut.disarm(id);
        if (order == kAbortFirst) {
            EXPECT_TRUE(was_cut) << "iteration " << i;
        }
        if (order == kDisarmFirst) {
            EXPECT_FALSE(was_cut) << "iteration " << i;
        }
        proxy.reset();
        auto [reused, reused_backend] = listener_.connect_pair();
        go.store(true);  // kDisarmFirst: the abort comes after the reuse
        if (aborter.joinable())
            aborter.join();
        if (reused.get() == number) {
            ASSERT_TRUE(can_send(reused)) << "iteration " << i << ": a reused fd was shut down";
            ASSERT_FALSE(sees_eof(reused_backend, 0)) << "iteration " << i;
        }
    }
}

}  // namespace
