// The metrics page (SetHandler abortguard-metrics): Prometheus's text
// format with the exact content type; after N aborts of each reason a test
// can produce (fin, rst, write, h2-reset, server-stop) each counter moved by
// exactly N, summed over all children; the in-flight gauge counts requests
// held in several children; work after abort measures a handler that went
// on working (by contrast with one that stopped), by handler name; a
// proxied abort counts a backend cut; `promtool check metrics` accepts the
// page. Every scenario runs under the event, worker and prefork MPMs.
//
// Not produced here: reason `timeout` needs keep-alive probes to go
// unanswered (a network namespace, test_interop's VanishedClient) and
// `error` a socket error that is neither a reset nor a close, which
// loopback does not give; their samples are checked by the unit tests.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "h2_client.h"
#include "harness.h"
#include "json.h"
#include "metrics_page.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);
constexpr Millis kSettle(10000);
constexpr int kEach = 2;  // aborts per reason

const char* const kReasonsMade[] = {"fin", "rst", "write", "h2-reset", "server-stop"};

std::string aborts_of(const std::string& reason) {
    return "apache_abortguard_aborts_total{reason=\"" + reason + "\"}";
}

std::string handler_requests(const std::string& handler) {
    return "apache_abortguard_handler_aborted_requests_total{handler=\"" + handler + "\"}";
}

std::string handler_seconds(const std::string& handler) {
    return "apache_abortguard_handler_work_after_abort_seconds_total{handler=\"" + handler + "\"}";
}

// ---------------------------------------------------------------- servers

// A plain backend for the proxied abort: one event-MPM httpd for every MPM
// of the front.
std::unique_ptr<Httpd>& backend_holder() {
    static std::unique_ptr<Httpd> b;
    return b;
}

Httpd& backend() {
    std::unique_ptr<Httpd>& b = backend_holder();
    if (!b) {
        HttpdOptions o;
        o.name = "metrics-backend";
        o.mpm = "event";
        b = std::make_unique<Httpd>(o);
        auto started = b->start();
        if (!started)
            ADD_FAILURE() << started.message();
    }
    return *b;
}

// The metrics page as an admin sets it up (not monitored itself, so that a
// scrape changes no count), a location whose stop notice is an abort, and a
// reverse proxy to the backend.
std::string metrics_config() {
    const std::string b = "http://127.0.0.1:" + std::to_string(backend().port());
    return sys_module("authz_host") + sys_module("proxy") + sys_module("proxy_http") +
           "<Location /metrics>\n  SetHandler abortguard-metrics\n  AbortGuard Off\n"
           "  Require local\n</Location>\n"
           "<Location /agstatus>\n  SetHandler abortguard-status\n  AbortGuard Off\n"
           "</Location>\n"
           "<Location /stopab>\n  SetHandler abortguard-test\n  AbortGuardStopAborts On\n"
           "</Location>\n"
           "ProxyPass /px/ " +
           b +
           "/\n"
           "<IfModule mpm_prefork_module>\n  StartServers 3\n  MinSpareServers 3\n"
           "  MaxSpareServers 8\n</IfModule>\n";
}

HttpdPool& metrics_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "metrics-" + mpm;
        o.mpm = mpm;
        o.h2 = true;
        o.extra_config = metrics_config();
        return o;
    });
    return pool;
}

// ------------------------------------------------------------------ tests

class Metrics : public HttpdTest {
  protected:
    HttpdPool& pool() override { return metrics_pool(); }
    static void TearDownTestSuite() {
        metrics_pool().stop_all();
        if (backend_holder()) {
            auto stopped = backend_holder()->stop();
            EXPECT_TRUE(stopped) << stopped.message();
            backend_holder().reset();
        }
    }

    void SetUp() override {
        if (std::getenv("AG_TEST_STOCK"))
            GTEST_SKIP() << "stock httpd has no metrics handler";
        HttpdTest::SetUp();
    }

    HttpResponse request(const std::string& head) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(head));
        auto r = c.read_response(kIo);
        EXPECT_TRUE(r) << "no response to " << head << ": " << c.received();
        return r.value_or(HttpResponse{});
    }

    HttpResponse get(const std::string& target) {
        return request(http_get(target, "Connection: close\r\n"));
    }

    MetricsPage metrics() {
        HttpResponse r = get("/metrics");
        EXPECT_EQ(r.status, 200) << r.body;
        return MetricsPage::parse(r.body);
    }

    // Polls the page until `done` holds (counts land just after the access
    // log line is written); returns the last reading.
    MetricsPage wait_metrics(const std::function<bool(const MetricsPage&)>& done) {
        Deadline deadline(kSettle);
        MetricsPage p = metrics();
        while (!done(p) && !deadline.expired()) {
            std::this_thread::sleep_for(Millis(20));
            p = metrics();
        }
        return p;
    }

    // A request whose handler has started (it flushed "started").
    RawClient started(const std::string& target) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(target)));
        EXPECT_TRUE(c.read_until("started\n", kIo)) << target << ": " << c.received();
        return c;
    }

    void abort_fin_or_rst(bool rst, std::vector<std::string>* tags) {
        tags->push_back(make_tag());
        RawClient c = started("/slow?ms=5000&flush=1&t=" + tags->back());
        rst ? c.close_rst() : c.close_fin();
    }

    // AbortGuard Off: nobody watches the socket, so only the failed write
    // of a large response tells (reason write). api=1 makes the handler ask
    // the module, which gives the request a state to count in.
    void abort_write(std::vector<std::string>* tags) {
        tags->push_back(make_tag());
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get("/off?api=1&ms=20&bytes=8000000&t=" + tags->back())));
        ASSERT_TRUE(c.read_at_least(64 * 1024, kIo)) << c.received().size();
        c.close_rst();
    }

    void abort_h2(std::vector<std::string>* tags) {
        H2Client h;
        ASSERT_TRUE(h.connect(httpd().port()));
        std::vector<uint32_t> streams;
        for (int i = 0; i < kEach; ++i) {
            tags->push_back(make_tag());
            streams.push_back(h.get("/slow?ms=5000&flush=1&api=1&t=" + tags->back()));
        }
        for (uint32_t s : streams) {
            ASSERT_TRUE(h.read_until(s, "started\n", kIo)) << h.data(s);
            ASSERT_TRUE(h.reset(s));
        }
        for (size_t i = tags->size() - streams.size(); i < tags->size(); ++i)
            await((*tags)[i]);  // before the connection goes with `h`
    }

    // AbortGuardStopAborts On: the graceful restart's stop notice aborts
    // the requests of the old children.
    void abort_server_stop(std::vector<std::string>* tags) {
        std::vector<RawClient> held;
        for (int i = 0; i < kEach; ++i) {
            tags->push_back(make_tag());
            held.push_back(started("/stopab?ms=20000&flush=1&api=1&t=" + tags->back()));
        }
        ASSERT_TRUE(httpd().graceful());
        for (auto& c : held)
            EXPECT_TRUE(c.read_all_until_close(kLogWait)) << c.received();
    }
};

TEST_P(Metrics, ServesTheExpositionFormat) {
    HttpResponse r = get("/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4");
    EXPECT_EQ(r.headers["cache-control"], "no-store");
    const MetricsPage p = MetricsPage::parse(r.body);
    EXPECT_EQ(p.types.at("apache_abortguard_requests_monitored_total"), "counter") << r.body;
    EXPECT_EQ(p.types.at("apache_abortguard_work_after_abort_seconds"), "histogram");
    EXPECT_EQ(p.types.at("apache_abortguard_requests_in_flight"), "gauge");
    EXPECT_EQ(p.value("apache_abortguard_detection_seconds_bucket{le=\"+Inf\"}"),
              p.value("apache_abortguard_detection_seconds_count"));
    EXPECT_GE(p.get("apache_abortguard_child_slots_used"), 1);
    // Only GET; HEAD has the headers and no body.
    EXPECT_EQ(request("POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n")
                  .status,
              405);
    HttpResponse head =
        request("HEAD /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.headers["content-type"], "text/plain; version=0.0.4");
}

// kEach aborts of every reason a test can make: each reason's counter moves
// by exactly kEach, the total by all of them, and each aborted request's end
// is counted as work after abort of its handler.
TEST_P(Metrics, CountsAbortsOfEachReason) {
    const MetricsPage before = metrics();
    std::vector<std::string> tags;
    for (int i = 0; i < kEach; ++i) {
        abort_fin_or_rst(false, &tags);
        abort_fin_or_rst(true, &tags);
        abort_write(&tags);
    }
    abort_h2(&tags);
    abort_server_stop(&tags);
    for (const auto& tag : tags)
        EXPECT_TRUE(access().wait_for(tag, kLogWait)) << "no access log line for " << tag;

    const double made = 5 * kEach;
    const auto delta = [&](const MetricsPage& p, const std::string& series) {
        return p.get(series) - before.get(series);
    };
    const MetricsPage after = wait_metrics([&](const MetricsPage& p) {
        return delta(p, "apache_abortguard_work_after_abort_seconds_count") >= made;
    });
    double total = 0;
    for (const char* reason : kReasonsMade) {
        EXPECT_EQ(delta(after, aborts_of(reason)), kEach) << reason << "\n" << after.text;
        total += delta(after, aborts_of(reason));
    }
    EXPECT_EQ(total, made);
    for (const char* untouched : {"error", "timeout"})
        EXPECT_EQ(delta(after, aborts_of(untouched)), 0) << untouched;
    EXPECT_EQ(delta(after, "apache_abortguard_work_after_abort_seconds_count"), made);
    EXPECT_EQ(delta(after, handler_requests("abortguard-test")), made) << after.text;
    // The /off requests (write) are not monitored; the others are.
    EXPECT_EQ(delta(after, "apache_abortguard_requests_monitored_total"), 4 * kEach);
    // Kernel events: fin and rst (h2-reset is a flag, write and server-stop
    // no event at all).
    EXPECT_EQ(delta(after, "apache_abortguard_detection_seconds_count"), 2 * kEach);
    EXPECT_EQ(delta(after, "apache_abortguard_request_to_abort_seconds_count"), made);
    EXPECT_EQ(delta(after, "apache_abortguard_stop_notices_total"), kEach);

    // The status page says the same.
    auto j = Json::parse(get("/agstatus?json").body);
    ASSERT_TRUE(j);
    double sum_on_page = 0;
    for (const auto& [series, v] : after.samples) {
        if (series.rfind("apache_abortguard_aborts_total{", 0) == 0)
            sum_on_page += v;
    }
    EXPECT_EQ((*j)["aborts"]["total"].as_number(), sum_on_page);
    EXPECT_EQ((*j)["latency"]["work_after_abort"]["count"].as_number(),
              after.get("apache_abortguard_work_after_abort_seconds_count"));
}

// Requests held in several children at once (three children under
// prefork) are all in the gauge, and leave it when they end.
TEST_P(Metrics, RequestsInFlightSumsAllChildren) {
    const auto in_flight = [](const MetricsPage& p) {
        return p.get("apache_abortguard_requests_in_flight");
    };
    EXPECT_EQ(in_flight(wait_metrics([&](const MetricsPage& p) { return in_flight(p) == 0; })), 0);
    std::vector<RawClient> held;
    std::vector<std::string> tags;
    for (int i = 0; i < 3; ++i) {
        tags.push_back(make_tag());
        held.push_back(started("/slow?ms=20000&flush=1&t=" + tags.back()));
    }
    const MetricsPage during =
        wait_metrics([&](const MetricsPage& p) { return in_flight(p) == 3; });
    EXPECT_EQ(in_flight(during), 3) << during.text;
    auto j = Json::parse(get("/agstatus?json").body);
    ASSERT_TRUE(j);
    EXPECT_EQ((*j)["in_flight_all_children"].as_int(), 3);
    for (auto& c : held)
        c.close_fin();
    for (const auto& tag : tags)
        await(tag);
    EXPECT_EQ(in_flight(wait_metrics([&](const MetricsPage& p) { return in_flight(p) == 0; })), 0);
}

// Work after abort is how long the handler went on: one that never looks
// (AbortGuardMarkConnection Off: it is not told) works to its end, 2 s after
// it started, for nobody; one that is told stops at once. The recorded time
// matches the handler's end minus the client's close (same clock), within
// loose bounds that leave room for a loaded machine.
TEST_P(Metrics, WorkAfterAbortMeasuresTheHandlersWastedTime) {
    struct Outcome {
        double recorded = 0, by_handler = 0, handler_end_after_close = 0;
    };
    const std::string sum = "apache_abortguard_work_after_abort_seconds_sum";
    const std::string count = "apache_abortguard_work_after_abort_seconds_count";
    const auto one_abort = [&](const std::string& target) {
        const MetricsPage before = metrics();
        const std::string tag = make_tag();
        RawClient c = started(target + "&t=" + tag);
        c.close_fin();
        const AccessLine line = await(tag);
        const MetricsPage after =
            wait_metrics([&](const MetricsPage& p) { return p.get(count) > before.get(count); });
        EXPECT_EQ(after.get(count) - before.get(count), 1);
        Outcome o;
        o.recorded = after.get(sum) - before.get(sum);
        o.by_handler = after.get(handler_seconds("abortguard-test")) -
                       before.get(handler_seconds("abortguard-test"));
        EXPECT_TRUE(line.end_us) << line.raw;
        o.handler_end_after_close = (line.end_us.value_or(0) - c.close_us()) / 1e6;
        return o;
    };
    const Outcome ignoring = one_abort("/nomark?ms=2000&flush=1");
    const Outcome stopping = one_abort("/slow?ms=5000&flush=1");
    std::printf(
        "work_after_abort_s mpm=%s ignoring=%.6f (handler ended %.6f after the close) "
        "stopping=%.6f\n",
        mpm().c_str(), ignoring.recorded, ignoring.handler_end_after_close, stopping.recorded);
    EXPECT_GT(ignoring.recorded, 0.5) << "a handler that ignored the abort for up to 2 s";
    EXPECT_NEAR(ignoring.recorded, ignoring.handler_end_after_close, 0.5);
    EXPECT_LT(stopping.recorded, 0.5) << "a handler that stopped at once";
    EXPECT_LT(stopping.recorded, ignoring.recorded);
    EXPECT_NEAR(ignoring.by_handler, ignoring.recorded, 1e-6);
    EXPECT_NEAR(stopping.by_handler, stopping.recorded, 1e-6);
}

// A client that leaves a proxied request: the backend connection is cut
// and counted, and the wasted work is the proxy's.
TEST_P(Metrics, ProxiedAbortCountsABackendCut) {
    const MetricsPage before = metrics();
    const std::string tag = make_tag();
    RawClient c = started("/px/slow?ms=5000&flush=1&t=" + tag);
    c.close_fin();
    await(tag);
    const MetricsPage after = wait_metrics([&](const MetricsPage& p) {
        return p.get(handler_requests("proxy-server")) >
               before.get(handler_requests("proxy-server"));
    });
    EXPECT_EQ(after.get("apache_abortguard_backend_cuts_total") -
                  before.get("apache_abortguard_backend_cuts_total"),
              1)
        << after.text;
    EXPECT_EQ(
        after.get(handler_requests("proxy-server")) - before.get(handler_requests("proxy-server")),
        1);
}

// Prometheus's own linter accepts the page, handler series included.
TEST_P(Metrics, PromtoolAcceptsThePage) {
    if (run_command({"promtool", "--version"}, kIo).exit_code != 0)
        GTEST_SKIP() << "promtool is not installed (scripts/deps installs prometheus)";
    std::vector<std::string> tags;
    abort_fin_or_rst(false, &tags);
    await(tags.back());
    const MetricsPage p = wait_metrics([](const MetricsPage& m) {
        return m.count_with_label("apache_abortguard_handler_", "handler") > 0;
    });
    const std::string file = httpd().run_dir() + "/metrics-page.txt";
    std::ofstream(file) << p.text;
    const CommandResult r =
        run_command({"sh", "-c", "promtool check metrics < \"$0\" 2>&1", file}, kLogWait);
    std::printf("promtool_check_metrics mpm=%s exit=%d output=[%s]\n", mpm().c_str(), r.exit_code,
                r.output.c_str());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output, "") << "lint findings";

    // Contrast: the same check fails a page with a counter named against
    // the conventions (no _total), so its silence above means something.
    std::string bad = p.text;
    for (size_t at; (at = bad.find("backend_cuts_total")) != std::string::npos;)
        bad.replace(at, 18, "backend_cuts");
    const std::string bad_file = file + ".bad";
    std::ofstream(bad_file) << bad;
    const CommandResult linted =
        run_command({"sh", "-c", "promtool check metrics < \"$0\" 2>&1", bad_file}, kLogWait);
    EXPECT_NE(linted.exit_code, 0) << linted.output;
    EXPECT_NE(linted.output.find("_total"), std::string::npos) << linted.output;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Metrics, testing::ValuesIn(all_mpms()), mpm_param_name);

// ---------------------------------------------------------------- isolation

// Two virtual hosts; B lets its tenant's .htaccess choose handlers. The
// tenant's metrics page has the server-wide counters but neither the
// requests in flight nor the handler names (other tenants' traffic); the
// admin's page, in the configuration files, has both.
HttpdOptions isolation_options(const std::string& mpm) {
    HttpdOptions o;
    o.name = "metrics-isolation-" + mpm;
    o.mpm = mpm;
    o.extra_config =
        "<Location /metrics>\n  SetHandler abortguard-metrics\n  AbortGuard Off\n</Location>\n"
        "<VirtualHost *>\n  ServerName a.test\n  DocumentRoot \"@RUNDIR@/a\"\n"
        "  <Location /secret-app>\n    SetHandler abortguard-test\n  </Location>\n"
        "</VirtualHost>\n"
        "<VirtualHost *>\n  ServerName b.test\n  DocumentRoot \"@RUNDIR@/b\"\n"
        "  <Directory \"@RUNDIR@/b\">\n    AllowOverride FileInfo\n  </Directory>\n"
        "</VirtualHost>\n";
    o.files["a/index.html"] = "a\n";
    o.files["b/tenant/.htaccess"] = "SetHandler abortguard-metrics\n";
    return o;
}

HttpdPool& isolation_pool() {
    static HttpdPool pool([](const std::string& mpm) { return isolation_options(mpm); });
    return pool;
}

class MetricsIsolation : public HttpdTest {
  protected:
    HttpdPool& pool() override { return isolation_pool(); }
    static void TearDownTestSuite() { isolation_pool().stop_all(); }

    std::string page(const std::string& host, const std::string& path) {
        RawClient c = connect();
        EXPECT_TRUE(
            c.send("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"));
        auto r = c.read_response(kIo);
        EXPECT_TRUE(r && r->status == 200) << host << path << ": " << c.received();
        EXPECT_EQ(r ? r->headers["content-type"] : "", "text/plain; version=0.0.4");
        return r ? r->body : "";
    }
};

TEST_P(MetricsIsolation, AnHtaccessPageShowsOnlyServerWideCounters) {
    if (std::getenv("AG_TEST_STOCK"))
        GTEST_SKIP() << "stock httpd has no metrics handler";
    // Vhost A's application wastes work once: its name is in the table.
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(
        c.send("GET /secret-app?ms=5000&flush=1&t=" + tag + " HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
    c.close_fin();
    await(tag);
    MetricsPage admin;
    for (Deadline d(kSettle); !d.expired();) {
        admin = MetricsPage::parse(page("localhost", "/metrics"));
        if (admin.get(handler_requests("abortguard-test")) >= 1)
            break;
        std::this_thread::sleep_for(Millis(20));
    }
    EXPECT_GE(admin.get(handler_requests("abortguard-test")), 1) << admin.text;
    EXPECT_TRUE(admin.has_family("apache_abortguard_requests_in_flight"));

    const MetricsPage tenant = MetricsPage::parse(page("b.test", "/tenant/"));
    EXPECT_EQ(tenant.text.find("abortguard-test"), std::string::npos) << tenant.text;
    EXPECT_FALSE(tenant.has_family("apache_abortguard_requests_in_flight"));
    EXPECT_FALSE(tenant.has_family("apache_abortguard_handler_aborted_requests_total"));
    EXPECT_FALSE(tenant.has_family("apache_abortguard_handler_work_after_abort_seconds_total"));
    // The server-wide counters are there, and the same.
    EXPECT_EQ(tenant.get(aborts_of("fin")), admin.get(aborts_of("fin")));
    EXPECT_GE(tenant.get(aborts_of("fin")), 1);
    EXPECT_TRUE(tenant.has_family("apache_abortguard_work_after_abort_seconds"));
}

INSTANTIATE_TEST_SUITE_P(Mpm, MetricsIsolation, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
