// Tunnels: a request that mod_proxy turns into a tunnel (a WebSocket
// upgrade, answered 101) is watched only for a client that vanishes (RST,
// errors). A half-close is the client ending its direction, which the
// tunnel forwards to the backend: it is neither an abort nor a reason to cut
// the backend. The backend (tests/integration/backends/ws_backend.js) is a
// real WebSocket server: after the client's half-close it sends 64 KiB and
// closes. Every scenario runs under the event, worker and prefork MPMs.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "harness.h"
#include "node_backend.h"

namespace agtest {
namespace {

constexpr Millis kIo(10000);
constexpr Millis kLogWait(10000);
constexpr size_t kPayload = 65536;
constexpr size_t kFrameHeader = 10;  // 0x82, 127, 64-bit length

std::unique_ptr<NodeBackend>& backend_holder() {
    static std::unique_ptr<NodeBackend> b;
    return b;
}

NodeBackend& backend() {
    if (!backend_holder())
        backend_holder() = std::make_unique<NodeBackend>("ws_backend.js", "ws-backend");
    return *backend_holder();
}

HttpdPool& tunnel_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        const std::string b = "127.0.0.1:" + std::to_string(backend().port());
        HttpdOptions o;
        o.name = "tunnel-" + mpm;
        o.mpm = mpm;
        o.extra_config = sys_module("proxy") + sys_module("proxy_http") + "ProxyPass /ws/ ws://" +
                         b + "/\n" + "ProxyPass /wsh/ http://" + b + "/ upgrade=websocket\n" +
                         "ProxyPass /ws-off/ ws://" + b + "/\n" +
                         "<Location /ws-off/>\n  AbortGuard Off\n</Location>\n";
        // mod_proxy's own complaint when it flushes backend data to a client
        // that reset before anyone read the reset (stock httpd logs it too;
        // the flush bypasses every filter the module could see it through).
        o.tolerated_log_lines = {"AH10221: proxy: websocket: client flushing failed"};
        return o;
    });
    return pool;
}

std::string upgrade_request(const std::string& target) {
    return "GET " + target +
           " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

class Tunnel : public HttpdTest {
  protected:
    HttpdPool& pool() override { return tunnel_pool(); }
    static void TearDownTestSuite() {
        tunnel_pool().stop_all();
        backend_holder().reset();
    }
    void SetUp() override {
        ASSERT_NE(backend().port(), 0) << "node did not start (scripts/deps installs nodejs)";
        events_.start(backend());
        HttpdTest::SetUp();
    }

    std::optional<int64_t> await_event(const std::string& what, const std::string& tag) {
        return events_.await(what, tag, kLogWait);
    }

    // Upgrades, half-closes, and returns the bytes after the 101's headers
    // that arrive until the server closes.
    std::string half_close_then_read(const std::string& prefix, const std::string& tag) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(upgrade_request(
            prefix + "chat?after=halfclose&bytes=" + std::to_string(kPayload) + "&t=" + tag)));
        EXPECT_TRUE(c.read_until("\r\n\r\n", kIo));
        EXPECT_EQ(c.received().rfind("HTTP/1.1 101", 0), 0u) << c.received();
        const size_t header_end = c.received().find("\r\n\r\n") + 4;
        EXPECT_TRUE(await_event("open", tag));
        c.half_close();
        EXPECT_TRUE(c.read_all_until_close(kIo));
        return c.received().substr(header_end);
    }

    BackendEvents events_;
};

TEST_P(Tunnel, AHalfCloseInsideAWebSocketTunnelLosesNothingAndIsNoAbort) {
    for (const std::string prefix : {"/ws/", "/wsh/"}) {
        SCOPED_TRACE(prefix);
        const std::string tag = make_tag();
        const std::string body = half_close_then_read(prefix, tag);
        EXPECT_EQ(body.size(), kFrameHeader + kPayload)
            << "the backend's 64 KiB after the client's half-close";
        AccessLine line = await(tag);
        EXPECT_EQ(line.status, 101) << line.raw;
        EXPECT_EQ(line.aborted, "-") << line.raw;
    }
}

// The same without the module's watch: what the tunnel does on its own.
TEST_P(Tunnel, WithAbortGuardOffTheTunnelBehavesTheSame) {
    const std::string tag = make_tag();
    EXPECT_EQ(half_close_then_read("/ws-off/", tag).size(), kFrameHeader + kPayload);
    EXPECT_EQ(await(tag).aborted, "-");
}

TEST_P(Tunnel, AClientThatVanishesFromATunnelIsStillAnAbort) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(upgrade_request("/ws/chat?after=hold&t=" + tag)));
    ASSERT_TRUE(c.read_until("\r\n\r\n", kIo));
    ASSERT_TRUE(await_event("open", tag));
    c.close_rst();
    const int64_t left = c.close_us();
    auto closed = await_event("end", tag);
    ASSERT_TRUE(closed) << "the backend never learnt that the client vanished";
    EXPECT_LT(*closed - left, 2000000);
    AccessLine line = await(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "rst") << line.raw;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Tunnel, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
