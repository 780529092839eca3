// Proxy propagation to a backend that knows nothing of httpd: a Node.js
// server (tests/integration/backends/node_backend.js) that learns its client
// left the way Node apps do, by the response's 'close' event. A client that
// leaves a request httpd proxies there fires that event within milliseconds,
// whether node has not answered yet or is streaming; with AbortGuardProxy
// Off (the contrast) node runs to its end and answers nobody.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "harness.h"
#include "node_backend.h"

namespace agtest {
namespace {

constexpr int64_t kMaxPropagationUs = 500000;  // loose: the figures are printed
constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);

std::unique_ptr<NodeBackend>& node_holder() {
    static std::unique_ptr<NodeBackend> node;
    return node;
}

NodeBackend& node() {
    if (!node_holder())
        node_holder() = std::make_unique<NodeBackend>("node_backend.js", "node-backend");
    return *node_holder();
}

HttpdPool& node_front_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        const std::string b = "http://127.0.0.1:" + std::to_string(node().port());
        HttpdOptions o;
        o.name = "proxy-node-" + mpm;
        o.mpm = mpm;
        o.extra_config = sys_module("proxy") + sys_module("proxy_http") + "ProxyPass /node/ " + b +
                         "/\n" + "ProxyPass /node-off/ " + b + "/\n" +
                         "<Location /node-off/>\n  AbortGuardProxy Off\n</Location>\n";
        return o;
    });
    return pool;
}

class ProxyNode : public HttpdTest {
  protected:
    HttpdPool& pool() override { return node_front_pool(); }

    static void TearDownTestSuite() {
        node_front_pool().stop_all();
        node_holder().reset();
    }

    void SetUp() override {
        ASSERT_NE(node().port(), 0)
            << "node did not start (scripts/deps installs nodejs): " << node().output();
        events_.start(node());
        HttpdTest::SetUp();
    }

    // When node noted `what` for `tag` ("start" or "close").
    std::optional<int64_t> await_event(const std::string& what, const std::string& tag,
                                       Millis timeout) {
        return events_.await(what, tag, timeout);
    }
    std::optional<int64_t> seen(const std::string& what, const std::string& tag) {
        return events_.seen(what, tag);
    }

    void expect_node_told(const std::string& tag, int64_t close_us, const char* phase) {
        auto closed = await_event("close", tag, kLogWait);
        ASSERT_TRUE(closed) << "node's response 'close' did not fire";
        const int64_t latency = *closed - close_us;
        EXPECT_GE(latency, 0);
        EXPECT_LT(latency, kMaxPropagationUs);
        std::printf("node_propagation_us mpm=%s phase=%s value=%lld\n", mpm().c_str(), phase,
                    static_cast<long long>(latency));
        std::fflush(stdout);
        AccessLine front = await("t=" + tag);
        EXPECT_EQ(front.aborted, "1") << front.raw;
        EXPECT_EQ(front.reason, "fin") << front.raw;
    }

    BackendEvents events_;
};

// Node has not answered yet: mod_proxy waits for the status line.
TEST_P(ProxyNode, NodeToldBeforeItAnswers) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/node/slow?ms=5000&t=" + tag)));
    ASSERT_TRUE(await_event("start", tag, kIo)) << "the request did not reach node";
    c.close_fin();
    expect_node_told(tag, c.close_us(), "status-line");
}

// Node is streaming its answer.
TEST_P(ProxyNode, NodeToldWhileStreaming) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/node/slow?ms=5000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    expect_node_told(tag, c.close_us(), "body");
}

// Contrast: with AbortGuardProxy Off, node is not told; it answers after its
// full time, to nobody, and httpd's request lasts that long.
TEST_P(ProxyNode, WithProxyOffNodeIsNotTold) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/node-off/slow?ms=1000&t=" + tag)));
    ASSERT_TRUE(await_event("start", tag, kIo)) << "the request did not reach node";
    c.close_fin();
    auto front = access().wait_for("t=" + tag, kLogWait);
    ASSERT_TRUE(front) << "the front request did not end";
    EXPECT_GE(front->duration_us, 1000000) << front->raw;
    EXPECT_FALSE(seen("close", tag)) << "node was told";
}

INSTANTIATE_TEST_SUITE_P(Mpm, ProxyNode, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
