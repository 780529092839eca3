// ConnTable: idle keep-alive connections end at the stop notice, busy ones
// are never touched, and a removed descriptor is never acted on, however
// fast the kernel reuses its number.
#include <errno.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "clock.h"
#include "conn_table.h"
#include "sockets.h"

using abortguard::ConnTable;
using abortguard::mono_ns;
using agtest::Fd;
using agtest::Listener;

namespace {

constexpr int64_t kMs = 1000000;

// Whether `fd` reads end-of-file right now (without blocking).
bool reads_eof(int fd) {
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

TEST(ConnTable, AnIdleConnectionsBlockedReaderSeesEndOfFileAtOnce) {
    Listener l;
    auto [client, server] = l.connect_pair();
    ConnTable t(4);
    const int slot = t.add(server.get());
    ASSERT_GE(slot, 0);
    t.set_idle(slot);
    std::atomic<bool> reading{false};
    ssize_t got = -1;
    int64_t blocked_for = 0;
    std::thread reader([&] {
        char buf[16];
        reading = true;
        const int64_t start = mono_ns();
        got = recv(server.get(), buf, sizeof buf, 0);  // a keep-alive wait
        blocked_for = mono_ns() - start;
    });
    while (!reading)
        std::this_thread::yield();
    EXPECT_EQ(t.shutdown_idle(), 1);
    reader.join();
    EXPECT_EQ(got, 0);
    EXPECT_LT(blocked_for, 5000 * kMs);
    EXPECT_TRUE(t.was_shut_down(slot));
    EXPECT_FALSE(t.set_busy(slot)) << "the owner learns that the connection was ended";
    // Only the reading side: a response still being flushed gets through.
    ASSERT_EQ(send(server.get(), "bye", 3, MSG_NOSIGNAL), 3);
    char buf[4] = {};
    EXPECT_EQ(recv(client.get(), buf, 3, MSG_WAITALL), 3);
    t.remove(slot);
}

TEST(ConnTable, ABusyConnectionIsNotTouched) {
    Listener l;
    auto [client, server] = l.connect_pair();
    ConnTable t(4);
    const int slot = t.add(server.get());  // a new connection starts busy
    EXPECT_EQ(t.shutdown_idle(), 0);
    t.set_idle(slot);
    EXPECT_TRUE(t.set_busy(slot));  // the next request arrived first
    EXPECT_EQ(t.shutdown_idle(), 0);
    char c;
    EXPECT_EQ(recv(server.get(), &c, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_FALSE(t.was_shut_down(slot));
    t.remove(slot);
}

TEST(ConnTable, BytesThatArrivedBeforeTheShutdownAreStillRead) {
    Listener l;
    auto [client, server] = l.connect_pair();
    ASSERT_EQ(send(client.get(), "GET", 3, MSG_NOSIGNAL), 3);
    pollfd p{server.get(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    ConnTable t(1);
    const int slot = t.add(server.get());
    t.set_idle(slot);
    EXPECT_EQ(t.shutdown_idle(), 1);
    char buf[8] = {};
    EXPECT_EQ(recv(server.get(), buf, sizeof buf, 0), 3);
    EXPECT_STREQ(buf, "GET");
    EXPECT_TRUE(reads_eof(server.get()));
    t.remove(slot);
}

TEST(ConnTable, AFullTableTracksNoMoreAndAFreedSlotIsReused) {
    ConnTable t(2);
    const int a = t.add(100), b = t.add(101);
    EXPECT_GE(a, 0);
    EXPECT_GE(b, 0);
    EXPECT_EQ(t.add(102), -1);
    EXPECT_EQ(t.open_count(), 2u);
    t.remove(a);
    EXPECT_GE(t.add(103), 0);
    // Slot -1 (not tracked) is accepted everywhere.
    t.set_idle(-1);
    EXPECT_TRUE(t.set_busy(-1));
    t.remove(-1);
}

// Owners add, idle and remove connections and close them, so descriptor
// numbers are reused at once, while another thread shuts down idle ones
// without pause. A descriptor reused by a socket that was never tracked must
// never be shut down.
TEST(ConnTableStress, ARemovedDescriptorIsNeverShutDown) {
    agtest::raise_fd_limit(4096);
    ConnTable t(8);
    std::atomic<bool> done{false};
    std::atomic<int> violations{0};
    std::thread shutter([&] {
        while (!done.load())
            t.shutdown_idle();
    });
    auto owner = [&](int iterations) {
        Listener l;  // one per thread: accept() returns this thread's peer
        for (int i = 0; i < iterations; ++i) {
            {
                auto [client, server] = l.connect_pair();
                const int slot = t.add(server.get());
                if (slot < 0)
                    continue;
                t.set_idle(slot);
                if (i % 3 == 0)
                    t.set_busy(slot);
                t.remove(slot);
            }  // both ends closed: their numbers are free again
            // Likely the same numbers, never tracked: must stay untouched.
            auto [c2, s2] = l.connect_pair();
            if (reads_eof(s2.get()) || reads_eof(c2.get()))
                violations.fetch_add(1);
        }
    };
    std::vector<std::thread> owners;
    for (int i = 0; i < 3; ++i)
        owners.emplace_back(owner, 1500);
    for (auto& o : owners)
        o.join();
    done = true;
    shutter.join();
    EXPECT_EQ(violations.load(), 0);
    EXPECT_EQ(t.open_count(), 0u);
}

}  // namespace
