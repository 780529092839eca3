// Proxy propagation (AbortGuardProxy): a client that leaves a request httpd
// proxies to a backend makes httpd shut the backend connection down, so the
// backend sees the close within milliseconds -- and nothing else suffers:
// no error or warn line, no balancer member in error state, no reuse of a
// cut connection, and %>s stays httpd's own (or AbortGuardLogStatus's).
//
// The backend is a second httpd running this module and the test handler:
// it notices the proxy's close without writing (it polls c->aborted) and
// logs when, on the same clock as the test client. It listens on loopback;
// one event-MPM backend serves the front httpds of every MPM.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "h2_client.h"
#include "harness.h"

namespace agtest {
namespace {

constexpr int64_t kMaxPropagationUs = 500000;  // loose: the figures are printed
constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);

// ------------------------------------------------------------------ backend

// One line of the backend's connection log: which TCP connection (the
// proxy's source port) carried which request, and what the backend saw.
struct BackendLine {
    int port = 0;
    std::string reason;  // "-" unless the backend's request was aborted
    std::string url;
};

std::unique_ptr<Httpd>& backend_holder() {
    static std::unique_ptr<Httpd> b;
    return b;
}

Httpd& backend() {
    std::unique_ptr<Httpd>& b = backend_holder();
    if (!b) {
        HttpdOptions o;
        o.name = "proxy-backend";
        o.mpm = "event";
        o.files["marks/.keep"] = "";
        // Pooled proxy connections never time out during a test here, so a
        // dead pooled connection can only be one the proxy should not have
        // pooled (see BalancerSurvivesHundredAborts).
        o.extra_config =
            "KeepAliveTimeout 60\n"
            "LogFormat \"%{remote}p %{ABORTGUARD_REASON}e %U%q\" conns\n"
            "CustomLog \"@RUNDIR@/conns.log\" conns\n"
            "<Location /m1/slow>\n  SetHandler abortguard-test\n</Location>\n"
            "<Location /m2/slow>\n  SetHandler abortguard-test\n</Location>\n";
        b = std::make_unique<Httpd>(o);
        auto started = b->start();
        if (!started) {
            ADD_FAILURE() << started.message();
        }
        // httpd's children (www-data when run as root) create the marks.
        ::chmod((b->run_dir() + "/marks").c_str(), 0777);
    }
    return *b;
}

std::vector<BackendLine> backend_lines(const LogCursor& cursor) {
    std::vector<BackendLine> out;
    for (const auto& raw : cursor.new_lines()) {
        std::istringstream in(raw);
        BackendLine l;
        if (in >> l.port >> l.reason >> l.url)
            out.push_back(l);
    }
    return out;
}

// ---------------------------------------------------------------- the front

std::string front_config(int backend_port) {
    const std::string b = "http://127.0.0.1:" + std::to_string(backend_port);
    // proxy:debug shows AH00951, a pooled backend connection found dead.
    return "LogLevel info abortguard:debug proxy:debug\n" + sys_module("proxy") +
           sys_module("proxy_http") + sys_module("slotmem_shm") + sys_module("proxy_balancer") +
           sys_module("lbmethod_byrequests") +
           // Plain reverse proxy, with and without the feature.
           "ProxyPass /px/ " + b + "/\n" + "ProxyPass /px-off/ " + b + "/\n" +
           "<Location /px-off/>\n  AbortGuardProxy Off\n</Location>\n" + "ProxyPass /px-noag/ " +
           b + "/\n" + "<Location /px-noag/>\n  AbortGuard Off\n</Location>\n" +
           "ProxyPass /px-499/ " + b + "/\n" +
           "<Location /px-499/>\n  AbortGuardLogStatus 499\n</Location>\n" +
           // A balancer with two members (two workers, two connection pools).
           "<Proxy balancer://agpool>\n  BalancerMember " + b + "/m1\n  BalancerMember " + b +
           "/m2\n</Proxy>\n" + "ProxyPass /bal/ balancer://agpool/\n" +
           "<Location /balancer-manager>\n  SetHandler balancer-manager\n  AbortGuard Off\n"
           "</Location>\n";
}

HttpdPool& proxy_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "proxy-front-" + mpm;
        o.mpm = mpm;
        o.extra_config = front_config(backend().port());
        o.h2 = true;  // h2c too: an HTTP/2 stream reset travels to the backend
        return o;
    });
    return pool;
}

std::map<std::string, std::vector<int64_t>>& latencies() {
    static std::map<std::string, std::vector<int64_t>> all;
    return all;
}

class Proxy : public HttpdTest {
  protected:
    HttpdPool& pool() override { return proxy_pool(); }

    static void TearDownTestSuite() {
        proxy_pool().stop_all();
        if (backend_holder()) {
            auto stopped = backend_holder()->stop();
            EXPECT_TRUE(stopped) << stopped.message();
            backend_holder().reset();
        }
        for (auto& [key, values] : latencies()) {
            if (values.empty())
                continue;
            std::sort(values.begin(), values.end());
            std::printf("proxy_propagation_summary %s n=%zu median_us=%lld max_us=%lld\n",
                        key.c_str(), values.size(),
                        static_cast<long long>(values[values.size() / 2]),
                        static_cast<long long>(values.back()));
        }
        std::fflush(stdout);
        latencies().clear();
    }

    void SetUp() override {
        HttpdTest::SetUp();
        backend_access_.start(backend().access_log_path());
        conns_.start(backend().run_dir() + "/conns.log");
    }

    void TearDown() override {
        HttpdTest::TearDown();
        auto problems = backend().unchecked_problems();
        EXPECT_TRUE(problems.empty()) << "backend error log:\n" << testing::PrintToString(problems);
    }

    std::string mark_path(const std::string& tag) const {
        return backend().run_dir() + "/marks/" + tag;
    }

    // Waits until the backend's handler for `tag` has started (it creates
    // its mark file first thing).
    bool backend_started(const std::string& tag) {
        Deadline deadline(kIo);
        struct stat st {};
        while (::stat(mark_path(tag).c_str(), &st) != 0) {
            if (deadline.expired())
                return false;
            std::this_thread::sleep_for(Millis(1));
        }
        return true;
    }

    // The line of the request whose URL ends with "t=<tag>".
    AccessLine await(AccessLog& log, const std::string& tag) {
        const std::string end = "t=" + tag;
        auto line = log.wait_for(
            [&](const AccessLine& l) {
                return l.url.size() >= end.size() &&
                       l.url.compare(l.url.size() - end.size(), end.size(), end) == 0;
            },
            kLogWait);
        EXPECT_TRUE(line) << "no access log line for " << tag;
        return line.value_or(AccessLine{});
    }

    // The backend's request saw its connection close within the bound.
    void expect_backend_told(const AccessLine& line, int64_t close_us, const std::string& phase,
                             bool print = true) {
        EXPECT_EQ(line.aborted, "1") << line.raw;
        EXPECT_EQ(line.reason, "fin") << line.raw;
        ASSERT_TRUE(line.noticed_us) << "backend handler never saw the close: " << line.raw;
        const int64_t latency = *line.noticed_us - close_us;
        EXPECT_GE(latency, 0) << line.raw;
        EXPECT_LT(latency, kMaxPropagationUs) << line.raw;
        latencies()["mpm=" + mpm() + " phase=" + phase].push_back(latency);
        if (print) {
            std::printf("proxy_propagation_us mpm=%s phase=%s value=%lld\n", mpm().c_str(),
                        phase.c_str(), static_cast<long long>(latency));
            std::fflush(stdout);
        }
    }

    // The backend ran its full time: nobody told it.
    static void expect_backend_not_told(const AccessLine& line, int64_t ran_at_least_us) {
        EXPECT_EQ(line.aborted, "-") << line.raw;
        EXPECT_FALSE(line.noticed_us) << line.raw;
        ASSERT_TRUE(line.handler_us()) << line.raw;
        EXPECT_GE(*line.handler_us(), ran_at_least_us) << line.raw;
    }

    std::string balancer_manager_xml() {
        RawClient c = connect();
        // The page ignores parameters (xml) without a same-site Referer.
        EXPECT_TRUE(c.send(http_get("/balancer-manager?xml=1",
                                    "Referer: http://localhost/balancer-manager\r\n"
                                    "Connection: close\r\n")));
        auto response = c.read_response(kIo);
        EXPECT_TRUE(response);
        return response ? response->body : "";
    }

    AccessLog backend_access_;
    LogCursor conns_;
};

// The backend is streaming its response (it flushed "started") when the
// client leaves.
TEST_P(Proxy, BackendToldWhileStreaming) {
    std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/px/slow?ms=5000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    expect_backend_told(await(backend_access_, tag), c.close_us(), "body");
    AccessLine front = await(access(), tag);
    EXPECT_EQ(front.aborted, "1") << front.raw;
    EXPECT_EQ(front.reason, "fin") << front.raw;
    EXPECT_EQ(front.status, 200) << "the backend's status, as sent: " << front.raw;
    EXPECT_LT(front.duration_us, 2500000) << "the front request ended early: " << front.raw;
}

// HTTP/2 front end: the client resets one stream while mod_proxy waits for
// the backend's status line; the stream's abort (seen within ~10 ms, see
// test_h2.cc) reaches the backend. (While a response streams, mod_proxy may
// see the stream's aborted flag itself at its next flush and close the
// backend on its own, so that phase would not tell the feature from stock.)
TEST_P(Proxy, Http2StreamResetReachesBackend) {
    std::string tag = make_tag();
    H2Client h;
    ASSERT_TRUE(h.connect(httpd().port()));
    const uint32_t s = h.get("/px/slow?ms=5000&mark=" + mark_path(tag) + "&t=" + tag);
    ASSERT_NE(s, 0u);
    ASSERT_TRUE(backend_started(tag));
    ASSERT_TRUE(h.reset(s));
    expect_backend_told(await(backend_access_, tag), h.sent_us(), "h2-stream");
    AccessLine front = await(access(), tag);
    EXPECT_EQ(front.protocol, "HTTP/2.0") << front.raw;
    EXPECT_EQ(front.aborted, "1") << front.raw;
    EXPECT_EQ(front.reason, "h2-reset") << front.raw;
}

// The backend computes without writing anything: mod_proxy waits for its
// status line when the client leaves.
TEST_P(Proxy, BackendToldBeforeItAnswers) {
    std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/px/slow?ms=5000&mark=" + mark_path(tag) + "&t=" + tag)));
    ASSERT_TRUE(backend_started(tag));
    c.close_rst();
    expect_backend_told(await(backend_access_, tag), c.close_us(), "status-line");
    AccessLine front = await(access(), tag);
    EXPECT_EQ(front.aborted, "1") << front.raw;
    EXPECT_EQ(front.reason, "rst") << front.raw;
    // httpd's own verdict: no response came from the backend.
    EXPECT_EQ(front.status, 502) << front.raw;
    EXPECT_LT(front.duration_us, 2500000) << front.raw;
}

// Contrast: with AbortGuardProxy Off, or without the module on the front
// location, the backend is not told and runs its full time. The client
// leaves while mod_proxy waits for the status line, where nothing in
// mod_proxy looks at the client. (While a response streams, mod_proxy
// itself closes the backend when it next checks c->aborted between two
// reads -- which AbortGuardMarkConnection sets -- but only if it gets
// there: a backend that stays quiet keeps it blocked in a read.)
TEST_P(Proxy, ProxyOffBackendNotTold) {
    for (const std::string prefix : {"/px-off/", "/px-noag/"}) {
        std::string tag = make_tag();
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get(prefix + "slow?ms=1000&mark=" + mark_path(tag) + "&t=" + tag)));
        ASSERT_TRUE(backend_started(tag));
        c.close_fin();
        expect_backend_not_told(await(backend_access_, tag), 1000000);
        AccessLine front = await(access(), tag);
        EXPECT_GE(front.duration_us, 1000000) << front.raw;
    }
    // Without the module, not even a streaming response's backend is told.
    std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/px-noag/slow?ms=1000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    expect_backend_not_told(await(backend_access_, tag), 1000000);
}

// AbortGuardLogStatus 499: an aborted request logs 499; a completed one
// its real status.
TEST_P(Proxy, LogStatusForAbortedRequests) {
    std::string aborted_tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/px-499/slow?ms=5000&flush=1&t=" + aborted_tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    AccessLine line = await(access(), aborted_tag);
    EXPECT_EQ(line.status, 499) << line.raw;
    EXPECT_EQ(line.aborted, "1") << line.raw;

    std::string done_tag = make_tag();
    RawClient d = connect();
    ASSERT_TRUE(d.send(http_get("/px-499/slow?ms=10&t=" + done_tag)));
    auto response = d.read_response(kIo);
    ASSERT_TRUE(response) << d.received();
    EXPECT_EQ(response->body, "done\n");
    AccessLine ok = await(access(), done_tag);
    EXPECT_EQ(ok.status, 200) << ok.raw;
    EXPECT_EQ(ok.aborted, "-") << ok.raw;
}

// 100 aborted requests through a balancer with two members, half of them
// while mod_proxy waits for the status line on a keep-alive client
// connection (the path where mod_proxy_http would answer 500 and mark the
// member in error), half while the backend streams. Afterwards both
// members are Ok, requests succeed, and backend connections are pooled and
// reused again -- but no cut one was pooled: mod_proxy would find it dead
// when it next took it from the pool (AH00951) and silently reconnect.
TEST_P(Proxy, BalancerSurvivesHundredAborts) {
    const std::string base = make_tag();
    std::set<int> cut_ports;
    for (int i = 0; i < 100; ++i) {
        const std::string tag = base + "i" + std::to_string(i) + "z";
        RawClient c = connect();
        if (i % 2 == 0) {
            // A first request completes, so the client connection has had a
            // keep-alive request when the second one is cut.
            ASSERT_TRUE(c.send(http_get("/bal/slow?ms=0&t=" + tag + "warm")));
            auto warm = c.read_response(kIo);
            ASSERT_TRUE(warm && warm->status == 200) << i << ": " << c.received();
            ASSERT_TRUE(c.send(http_get("/bal/slow?ms=5000&mark=" + mark_path(tag) + "&t=" + tag)));
            ASSERT_TRUE(backend_started(tag)) << i;
            c.close_fin();
        } else {
            ASSERT_TRUE(c.send(http_get("/bal/slow?ms=5000&flush=1&t=" + tag)));
            ASSERT_TRUE(c.read_until("started\n", kIo)) << i << ": " << c.received();
            c.close_rst();
        }
        // One at a time: each aborted backend request ends before the next.
        AccessLine b = await(backend_access_, tag);
        ASSERT_TRUE(b.noticed_us) << i << ": backend not told: " << b.raw;
        b.reason = "fin";  // the backend saw a FIN whatever the client sent
        expect_backend_told(b, c.close_us(), i % 2 == 0 ? "balancer-status-line" : "balancer-body",
                            false);
    }
    auto front_lines = access().wait_for_count(base, 150, kLogWait);
    ASSERT_EQ(front_lines.size(), 150u);
    for (const auto& l : front_lines) {
        if (l.url.find("warm") != std::string::npos) {
            EXPECT_EQ(l.status, 200) << l.raw;
            EXPECT_EQ(l.aborted, "-") << l.raw;
        } else {
            EXPECT_EQ(l.aborted, "1") << l.raw;
            EXPECT_TRUE(l.status == 200 || l.status == 502) << l.raw;
        }
    }
    for (const auto& l : backend_lines(conns_)) {
        if (l.reason != "-")
            cut_ports.insert(l.port);
    }
    EXPECT_GE(cut_ports.size(), 90u) << "every cut connection is a new one";

    const std::string xml = balancer_manager_xml();
    size_t members = 0;
    for (size_t p = xml.find("<httpd:status>"); p != std::string::npos;
         p = xml.find("<httpd:status>", p + 1)) {
        const std::string status = xml.substr(p + 14, xml.find('<', p + 14) - (p + 14));
        EXPECT_NE(status.find("Ok"), std::string::npos) << status << "\n" << xml;
        EXPECT_EQ(status.find("Err"), std::string::npos) << status << "\n" << xml;
        ++members;
    }
    EXPECT_EQ(members, 2u) << xml;
    EXPECT_EQ(xml.find("<httpd:error_time>"), std::string::npos) << xml;

    // Ten requests on one keep-alive connection: all succeed, over at most
    // one backend connection per member, none of them a cut one.
    LogCursor after;
    after.start(backend().run_dir() + "/conns.log");
    const std::string ok_tag = make_tag();
    RawClient c = connect();
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(c.send(http_get("/bal/slow?ms=0&t=" + ok_tag)));
        auto response = c.read_response(kIo);
        ASSERT_TRUE(response) << c.received();
        EXPECT_EQ(response->status, 200);
        EXPECT_EQ(response->body, "done\n");
    }
    std::set<int> ports;
    Deadline deadline(kLogWait);
    std::vector<BackendLine> lines;
    while (lines.size() < 10 && !deadline.expired()) {
        for (const auto& l : backend_lines(after))
            if (l.url.find(ok_tag) != std::string::npos)
                lines.push_back(l);
        if (lines.size() < 10) {
            lines.clear();
            std::this_thread::sleep_for(Millis(10));
        }
    }
    ASSERT_EQ(lines.size(), 10u);
    for (const auto& l : lines)
        ports.insert(l.port);
    EXPECT_LE(ports.size(), 2u) << "backend connections are not reused";
    for (const auto& line : errors().new_lines())
        EXPECT_EQ(line.find("AH00951"), std::string::npos)
            << "a cut connection was pooled: " << line;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Proxy, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
