// The synchronous probe against real TCP connections.
#include <gtest/gtest.h>

#include "probe.h"
#include "sockets.h"

using abortguard::probe_socket;
using abortguard::Reason;

namespace {

TEST(Probe, LivePeerIsThereEvenWithUnreadData) {
    agtest::Listener l;
    auto [client, server] = l.connect_pair();
    EXPECT_EQ(probe_socket(server.get(), false), Reason::kNone);
    ASSERT_EQ(::write(client.get(), "x", 1), 1);
    EXPECT_EQ(probe_socket(server.get(), false), Reason::kNone);
    char c;
    EXPECT_EQ(::read(server.get(), &c, 1), 1) << "the probe consumed nothing";
}

TEST(Probe, SeesFinUnlessHalfCloseIsIgnored) {
    agtest::Listener l;
    auto [client, server] = l.connect_pair();
    agtest::half_close(client);
    // The FIN is delivered synchronously on loopback, but poll until seen
    // to stay honest on a loaded machine.
    Reason r = Reason::kNone;
    for (int i = 0; i < 1000 && r == Reason::kNone; ++i)
        r = probe_socket(server.get(), false);
    EXPECT_EQ(r, Reason::kFin);
    EXPECT_EQ(probe_socket(server.get(), true), Reason::kNone);
}

TEST(Probe, SeesRst) {
    agtest::Listener l;
    auto [client, server] = l.connect_pair();
    agtest::close_with_rst(client);
    Reason r = Reason::kNone;
    for (int i = 0; i < 1000 && r == Reason::kNone; ++i)
        r = probe_socket(server.get(), true);
    EXPECT_EQ(r, Reason::kRst);
}

}  // namespace
