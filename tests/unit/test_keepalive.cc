// Keepalive settings on a real TCP socket: applied, then put back exactly.
#include <gtest/gtest.h>
#include <netinet/tcp.h>

#include "keepalive.h"
#include "sockets.h"

using abortguard::apply_keepalive;
using abortguard::KeepaliveSaved;
using abortguard::KeepaliveSettings;
using abortguard::restore_keepalive;

namespace {

struct Opts {
    int keepalive = -1, idle = -1, interval = -1, count = -1;
    unsigned user_timeout = 0;
    bool operator==(const Opts& o) const {
        return keepalive == o.keepalive && idle == o.idle && interval == o.interval &&
               count == o.count && user_timeout == o.user_timeout;
    }
};

Opts read_opts(int fd) {
    Opts o;
    socklen_t len = sizeof(int);
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &o.keepalive, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o.idle, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &o.interval, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &o.count, &len);
    getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &o.user_timeout, &len);
    return o;
}

TEST(Keepalive, AppliesAndRestores) {
    agtest::Listener listener;
    auto [client, server] = listener.connect_pair();
    const Opts before = read_opts(server.get());
    ASSERT_EQ(before.keepalive, 0);

    KeepaliveSettings s;
    s.idle_s = 7;
    s.interval_s = 3;
    s.count = 4;
    KeepaliveSaved saved;
    ASSERT_TRUE(apply_keepalive(server.get(), s, &saved).is_ok());
    EXPECT_TRUE(saved.saved);
    const Opts during = read_opts(server.get());
    EXPECT_EQ(during.keepalive, 1);
    EXPECT_EQ(during.idle, 7);
    EXPECT_EQ(during.interval, 3);
    EXPECT_EQ(during.count, 4);
    EXPECT_EQ(during.user_timeout, (7u + 3u * 4u) * 1000u);

    restore_keepalive(server.get(), &saved);
    EXPECT_FALSE(saved.saved);
    EXPECT_TRUE(read_opts(server.get()) == before);
    restore_keepalive(server.get(), &saved);  // twice: harmless
    EXPECT_TRUE(read_opts(server.get()) == before);
}

TEST(Keepalive, KeepsASocketsOwnSettings) {
    agtest::Listener listener;
    auto [client, server] = listener.connect_pair();
    int on = 1, idle = 600;
    setsockopt(server.get(), SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(server.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    const Opts before = read_opts(server.get());
    KeepaliveSaved saved;
    ASSERT_TRUE(apply_keepalive(server.get(), KeepaliveSettings{1, 1, 1}, &saved).is_ok());
    restore_keepalive(server.get(), &saved);
    EXPECT_TRUE(read_opts(server.get()) == before);
}

TEST(Keepalive, FailsCleanlyOnANonSocket) {
    KeepaliveSaved saved;
    EXPECT_FALSE(apply_keepalive(0 /* not a TCP socket in a test runner */,
                                 KeepaliveSettings{1, 1, 1}, &saved)
                     .is_ok());
    EXPECT_FALSE(saved.saved);
}

}  // namespace
