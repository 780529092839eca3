// The status page (SetHandler abortguard-status) and the mod_status section:
// the three formats parse, their counts match a scripted run of normal and
// aborted requests spread over several children, URIs are escaped, and the
// counters survive a graceful restart. Every scenario runs under the event,
// worker and prefork MPMs.
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "harness.h"
#include "json.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);
constexpr Millis kSettle(5000);

// The status handler and mod_status, as an admin would set them up; neither
// is monitored itself, so reading them does not change the counts.
std::string status_config() {
    const std::string sys = AG_SYS_MODULES_DIR;
    return "<IfModule !authz_host_module>\n  LoadModule authz_host_module " + sys +
           "/mod_authz_host.so\n</IfModule>\n"
           "<IfModule !status_module>\n  LoadModule status_module " +
           sys +
           "/mod_status.so\n</IfModule>\n"
           "<Location /agstatus>\n  SetHandler abortguard-status\n  AbortGuard Off\n"
           "  Require local\n</Location>\n"
           "<Location /server-status>\n  SetHandler server-status\n  AbortGuard Off\n"
           "  Require local\n</Location>\n"
           "<Location /other-app>\n  SetHandler abortguard-test\n"
           "  AbortGuardMarkConnection Off\n</Location>\n"
           "# Several children under prefork, so counts come from several slots.\n"
           "<IfModule mpm_prefork_module>\n  StartServers 3\n  MinSpareServers 3\n"
           "  MaxSpareServers 6\n</IfModule>\n";
}

HttpdOptions status_options(const std::string& name, const std::string& mpm) {
    HttpdOptions o;
    o.name = name + "-" + mpm;
    o.mpm = mpm;
    o.extra_config = status_config();
    return o;
}

HttpdPool& status_pool() {
    static HttpdPool pool([](const std::string& mpm) { return status_options("status", mpm); });
    return pool;
}

// "Key: value" lines of a ?auto page.
std::map<std::string, std::string> parse_auto(const std::string& body) {
    std::map<std::string, std::string> out;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
        const size_t colon = line.find(": ");
        if (colon != std::string::npos)
            out[line.substr(0, colon)] = line.substr(colon + 2);
    }
    return out;
}

// Numbers the scripted run changes, read from a ?json document.
struct Counts {
    int64_t monitored = 0, aborts = 0, fin = 0, rst = 0, detections = 0, to_abort = 0;
    int64_t restarts = 0, generation = 0, slots_used = 0;

    static Counts from(const Json& j) {
        Counts c;
        c.monitored = j["requests_monitored"].as_int();
        c.aborts = j["aborts"]["total"].as_int();
        c.fin = j["aborts"]["fin"].as_int();
        c.rst = j["aborts"]["rst"].as_int();
        c.detections = j["latency"]["detection"]["count"].as_int();
        c.to_abort = j["latency"]["request_to_abort"]["count"].as_int();
        c.restarts = j["restarts"].as_int();
        c.generation = j["generation"].as_int();
        c.slots_used = j["child_slots_used"].as_int();
        return c;
    }
};

class StatusTest : public HttpdTest {
  protected:
    HttpdPool& pool() override { return status_pool(); }
    static void TearDownTestSuite() { status_pool().stop_all(); }

    void SetUp() override {
        if (std::getenv("AG_TEST_STOCK"))
            GTEST_SKIP() << "stock httpd has no status handler";
        HttpdTest::SetUp();
    }

    // GET target on a new connection; the test fails on no response.
    HttpResponse get(const std::string& target, int port = 0) {
        RawClient c;
        EXPECT_TRUE(c.connect(port ? port : httpd().port()));
        EXPECT_TRUE(c.send(http_get(target, "Connection: close\r\n")));
        auto r = c.read_response(kIo);
        EXPECT_TRUE(r) << "no response to " << target << ": " << c.received();
        return r.value_or(HttpResponse{});
    }

    Json status_json(int port = 0) {
        HttpResponse r = get("/agstatus?json", port);
        EXPECT_EQ(r.status, 200);
        std::string error;
        auto j = Json::parse(r.body, &error);
        EXPECT_TRUE(j) << "not JSON (" << error << "):\n" << r.body;
        return j.value_or(Json{});
    }

    // Polls ?json until `done` holds (counts land just after the access
    // log line is written); returns the last reading.
    Counts wait_counts(const std::function<bool(const Counts&)>& done, int port = 0) {
        Deadline deadline(kSettle);
        Counts c = Counts::from(status_json(port));
        while (!done(c) && !deadline.expired()) {
            std::this_thread::sleep_for(Millis(20));
            c = Counts::from(status_json(port));
        }
        return c;
    }

    // A request the handler holds until the client leaves (FIN or RST).
    void aborted_request(bool rst, const std::string& tag, int port = 0) {
        RawClient c;
        ASSERT_TRUE(c.connect(port ? port : httpd().port()));
        ASSERT_TRUE(c.send(http_get("/slow?ms=5000&flush=1&t=" + tag)));
        ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
        rst ? c.close_rst() : c.close_fin();
    }
};

const std::regex kAutoLine("^[A-Za-z][A-Za-z0-9 ]*: .*$");

TEST_P(StatusTest, HtmlPageShowsTotalsReasonsAndLatency) {
    HttpResponse r = get("/agstatus");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "text/html; charset=utf-8");
    for (const char* part :
         {"<h1>mod_abortguard status</h1>", "<h2>Totals</h2>", "Requests monitored",
          "<h2>Aborts by reason</h2>", "<td class=\"l\">fin</td>", "<td class=\"l\">rst</td>",
          "<h3>Detection latency</h3>", "<h3>Request to abort latency</h3>",
          "In-flight monitored requests of child", "</html>"}) {
        EXPECT_NE(r.body.find(part), std::string::npos) << part << "\n" << r.body;
    }
    EXPECT_EQ(r.body.find("Counters not available"), std::string::npos) << r.body;
}

TEST_P(StatusTest, AutoLinesAreKeyValue) {
    HttpResponse r = get("/agstatus?auto");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-type"], "text/plain; charset=utf-8");
    std::istringstream in(r.body);
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines)
        EXPECT_TRUE(std::regex_match(line, kAutoLine)) << "bad ?auto line: '" << line << "'";
    EXPECT_GT(lines, 20);
    auto kv = parse_auto(r.body);
    for (const char* key :
         {"Requests monitored", "Aborts", "Aborts fin", "Aborts rst", "Aborts write",
          "Cleanups run", "Cleanups failed", "Cleanups slow", "Locks released by abort",
          "Stop notices", "Grace period actions", "Detection latency p99 us",
          "Request to abort latency count", "Detection latency below 1024 us", "Counters"}) {
        EXPECT_TRUE(kv.count(key)) << "missing key '" << key << "':\n" << r.body;
    }
    EXPECT_EQ(kv["Counters"], "1");
}

TEST_P(StatusTest, JsonParsesWithEveryField) {
    HttpResponse r = get("/agstatus?json");
    EXPECT_EQ(r.headers["content-type"], "application/json");
    std::string error;
    auto j = Json::parse(r.body, &error);
    ASSERT_TRUE(j) << error << "\n" << r.body;
    EXPECT_EQ((*j)["module"].as_string(), "mod_abortguard");
    // The version is said once, in configure.ac; the page must not drift.
    EXPECT_EQ((*j)["version"].as_string(), PACKAGE_VERSION);
    EXPECT_TRUE((*j)["counters_available"].as_bool());
    EXPECT_GE((*j)["child_slots"].as_int(), 2);
    EXPECT_GE((*j)["child_slots_used"].as_int(), 1);
    for (const char* key :
         {"requests_monitored", "cleanups_run", "cleanups_failed", "cleanups_slow",
          "locks_released_by_abort", "stop_notices", "grace_actions"}) {
        EXPECT_EQ((*j)[key].type(), Json::Type::kNumber) << key;
    }
    for (const char* reason : {"total", "fin", "rst", "error", "timeout", "write", "other"})
        EXPECT_EQ((*j)["aborts"][reason].type(), Json::Type::kNumber) << reason;
    for (const char* l : {"detection", "request_to_abort", "work_after_abort"}) {
        const Json& h = (*j)["latency"][l];
        EXPECT_EQ(h["unit"].as_string(), "us");
        EXPECT_EQ(h["buckets"].items().size(), 32u) << l;
    }
    EXPECT_EQ((*j)["inflight"]["requests"].type(), Json::Type::kArray);
    for (const char* key : {"backend_cuts", "cleanups_succeeded", "in_flight_all_children"})
        EXPECT_EQ((*j)[key].type(), Json::Type::kNumber) << key;
    EXPECT_TRUE((*j)["wasted_by_handler"]["shown"].as_bool());
    EXPECT_EQ((*j)["wasted_by_handler"]["handlers"].type(), Json::Type::kArray);
}

// Wasted work: a handler that is not told of the abort (MarkConnection Off)
// works its 1.5 s for nobody, one that is told stops; the table ranks them
// by wasted time in all three formats, and the work-after-abort histogram
// counts both.
TEST_P(StatusTest, WastedWorkByHandlerInEveryFormat) {
    const auto wasted = [](const Json& j, const std::string& handler) {
        for (const auto& h : j["wasted_by_handler"]["handlers"].items()) {
            if (h["handler"].as_string() == handler)
                return std::make_pair(h["requests"].as_int(), h["sum_us"].as_int());
        }
        return std::make_pair(int64_t{0}, int64_t{0});
    };
    const Json before = status_json();
    std::vector<std::string> tags = {make_tag(), make_tag()};
    {
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get("/other-app?ms=1500&flush=1&t=" + tags[0])));
        ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
        c.close_fin();
    }
    aborted_request(false, tags[1]);
    for (const auto& tag : tags)
        EXPECT_TRUE(access().wait_for(tag, kLogWait)) << "no access log line for " << tag;
    const int64_t count_before = before["latency"]["work_after_abort"]["count"].as_int();
    Json after = status_json();
    for (Deadline d(kSettle);
         !d.expired() && after["latency"]["work_after_abort"]["count"].as_int() < count_before + 2;
         std::this_thread::sleep_for(Millis(20)))
        after = status_json();
    EXPECT_EQ(after["latency"]["work_after_abort"]["count"].as_int(), count_before + 2);
    // Both are handler abortguard-test: one row, two more requests, and at
    // least the ignoring handler's second of waste more.
    const auto [requests0, sum0] = wasted(before, "abortguard-test");
    const auto [requests1, sum1] = wasted(after, "abortguard-test");
    EXPECT_EQ(requests1 - requests0, 2);
    // Loose: the ignoring handler ran 1.5 s from its start, the client
    // closed soon after it started.
    EXPECT_GT(sum1 - sum0, 500000) << "the handler that ignored the abort wasted up to 1.5 s";
    EXPECT_LT(sum1 - sum0, 10000000);

    const std::string html = get("/agstatus").body;
    EXPECT_NE(html.find("<h3>Work after abort</h3>"), std::string::npos) << html;
    EXPECT_NE(html.find("<h2>Wasted work by handler</h2>"), std::string::npos) << html;
    EXPECT_NE(html.find("<tr><td class=\"l\">abortguard-test</td><td>" + std::to_string(requests1) +
                        "</td>"),
              std::string::npos)
        << html;
    auto kv = parse_auto(get("/agstatus?auto").body);
    EXPECT_EQ(kv["Work after abort count"],
              std::to_string(after["latency"]["work_after_abort"]["count"].as_int()));
    bool listed = false;
    for (int i = 1; kv.count("Wasted work handler " + std::to_string(i)); ++i) {
        if (kv["Wasted work handler " + std::to_string(i)] == "abortguard-test") {
            listed = true;
            EXPECT_EQ(kv["Wasted work handler " + std::to_string(i) + " requests"],
                      std::to_string(requests1));
        }
    }
    EXPECT_TRUE(listed) << get("/agstatus?auto").body;
    EXPECT_NE(get("/server-status").body.find("<dt>Most work after abort: abortguard-test "),
              std::string::npos);
}

// Normal requests on three children at once, then FIN and RST aborts: the
// deltas in all three formats are exactly what was done.
TEST_P(StatusTest, CountsMatchAScriptedRun) {
    const Counts before = Counts::from(status_json());
    std::vector<std::string> tags;
    {
        std::vector<RawClient> held;
        for (int i = 0; i < 3; ++i) {
            tags.push_back(make_tag());
            held.push_back(connect());
            ASSERT_TRUE(held.back().send(
                http_get("/slow?ms=300&flush=1&t=" + tags.back(), "Connection: close\r\n")));
        }
        for (auto& c : held)
            EXPECT_TRUE(c.read_until("done\n", kIo)) << c.received();
    }
    for (int i = 0; i < 4; ++i) {
        tags.push_back(make_tag());
        aborted_request(i % 2 == 1, tags.back());
    }
    for (const auto& tag : tags)
        EXPECT_TRUE(access().wait_for(tag, kLogWait)) << "no access log line for " << tag;

    const Counts after = wait_counts([&](const Counts& c) {
        return c.monitored - before.monitored >= 7 && c.to_abort - before.to_abort >= 4;
    });
    EXPECT_EQ(after.monitored - before.monitored, 7);
    EXPECT_EQ(after.aborts - before.aborts, 4);
    EXPECT_EQ(after.fin - before.fin, 2);
    EXPECT_EQ(after.rst - before.rst, 2);
    EXPECT_EQ(after.to_abort - before.to_abort, 4);
    EXPECT_EQ(after.detections - before.detections, 4);
    if (mpm() == "prefork") {
        EXPECT_GE(after.slots_used, 3) << "three requests at once need three children";
    }

    // ?auto and the HTML page say the same.
    auto kv = parse_auto(get("/agstatus?auto").body);
    EXPECT_EQ(kv["Requests monitored"], std::to_string(after.monitored));
    EXPECT_EQ(kv["Aborts fin"], std::to_string(after.fin));
    EXPECT_EQ(kv["Aborts rst"], std::to_string(after.rst));
    EXPECT_EQ(kv["Detection latency count"], std::to_string(after.detections));
    const std::string html = get("/agstatus").body;
    EXPECT_NE(html.find("<tr><td class=\"l\">Requests monitored</td><td>" +
                        std::to_string(after.monitored) + "</td></tr>"),
              std::string::npos)
        << html;
}

// A URI is attacker-controlled: shown in the in-flight table, it is escaped
// in HTML and JSON alike.
TEST_P(StatusTest, InflightTableEscapesTheUri) {
    if (mpm() == "prefork")
        GTEST_SKIP() << "prefork: the child holding a request never serves the status page";
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(
        c.send(http_get("/slow/%3Cscript%3Ealert(1)%3C/script%3E?ms=5000&flush=1&t=" + tag)));
    ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();

    // The page lists the serving child's requests; with two children, ask
    // until the one holding ours answers (bounded).
    const std::string escaped = "/slow/&lt;script&gt;alert(1)&lt;/script&gt;";
    std::string html;
    Deadline deadline(kIo);
    do {
        html = get("/agstatus").body;
    } while (html.find(escaped) == std::string::npos && !deadline.expired());
    EXPECT_NE(html.find(escaped), std::string::npos) << html;
    EXPECT_EQ(html.find("<script>"), std::string::npos) << html;

    bool found = false;
    std::string body;
    do {
        body = get("/agstatus?json").body;
        EXPECT_EQ(body.find("<script>"), std::string::npos) << body;
        std::string error;
        auto j = Json::parse(body, &error);
        ASSERT_TRUE(j) << error << "\n" << body;
        EXPECT_TRUE((*j)["inflight"]["available"].as_bool()) << body;
        for (const auto& req : (*j)["inflight"]["requests"].items()) {
            if (req["uri"].as_string() == "/slow/<script>alert(1)</script>") {
                found = true;
                EXPECT_EQ(req["state"].as_string(), "running");
                EXPECT_GE(req["age_ms"].as_int(), 0);
            }
        }
    } while (!found && !deadline.expired());
    EXPECT_TRUE(found) << body;
    c.close_fin();
    EXPECT_TRUE(access().wait_for(tag, kLogWait));
}

// mod_status's server-status carries the module's section in HTML and ?auto.
TEST_P(StatusTest, ModStatusSectionInBothModes) {
    HttpResponse html = get("/server-status");
    EXPECT_EQ(html.status, 200);
    EXPECT_NE(html.body.find("<h2>mod_abortguard</h2>"), std::string::npos) << html.body;
    EXPECT_NE(html.body.find("<dt>Requests monitored: "), std::string::npos) << html.body;

    HttpResponse short_form = get("/server-status?auto");
    EXPECT_EQ(short_form.status, 200);
    std::istringstream in(short_form.body);
    int ours = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("AbortGuard ", 0) != 0)
            continue;
        ++ours;
        EXPECT_TRUE(std::regex_match(line, kAutoLine)) << "bad ?auto line: '" << line << "'";
    }
    EXPECT_GT(ours, 10) << short_form.body;
    auto kv = parse_auto(short_form.body);
    EXPECT_EQ(kv["AbortGuard Requests monitored"],
              std::to_string(Counts::from(status_json()).monitored))
        << short_form.body;
    EXPECT_TRUE(kv.count("AbortGuard Aborts fin")) << short_form.body;
}

INSTANTIATE_TEST_SUITE_P(Mpm, StatusTest, testing::ValuesIn(all_mpms()), mpm_param_name);

// A graceful restart (apachectl graceful) keeps the counts: the shared
// memory lives in the process pool, and new children add to it.
class StatusRestart : public testing::TestWithParam<std::string> {};

TEST_P(StatusRestart, CountersSurviveGracefulRestart) {
    if (std::getenv("AG_TEST_STOCK"))
        GTEST_SKIP() << "stock httpd has no status handler";
    Httpd httpd(status_options("status-graceful", GetParam()));
    ASSERT_TRUE(httpd.start());
    auto json = [&] {
        RawClient c;
        EXPECT_TRUE(c.connect(httpd.port()));
        EXPECT_TRUE(c.send(http_get("/agstatus?json", "Connection: close\r\n")));
        auto r = c.read_response(kIo);
        auto j = r ? Json::parse(r->body) : std::nullopt;
        EXPECT_TRUE(j) << (r ? r->body : "no response");
        return Counts::from(j.value_or(Json{}));
    };
    auto abort_one = [&] {
        RawClient c;
        ASSERT_TRUE(c.connect(httpd.port()));
        ASSERT_TRUE(c.send(http_get("/slow?ms=5000&flush=1")));
        ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
        c.close_fin();
    };
    auto settle = [&](int64_t aborts) {
        Deadline deadline(kSettle);
        Counts c = json();
        while (c.to_abort < aborts && !deadline.expired()) {
            std::this_thread::sleep_for(Millis(20));
            c = json();
        }
        return c;
    };
    abort_one();
    abort_one();
    const Counts before = settle(2);
    EXPECT_EQ(before.aborts, 2);
    EXPECT_EQ(before.monitored, 2);

    ASSERT_TRUE(httpd.graceful());
    // Under event and worker a child of the old generation may still accept
    // a connection for a moment after the new one answers (more so on a
    // loaded machine): ask until a child of the new generation answers.
    Counts after = json();
    for (Deadline d(kSettle); after.generation <= before.generation && !d.expired();) {
        std::this_thread::sleep_for(Millis(20));
        after = json();
    }
    EXPECT_GT(after.generation, before.generation);
    EXPECT_EQ(after.restarts, before.restarts + 1);
    EXPECT_EQ(after.aborts, 2);
    EXPECT_EQ(after.monitored, 2);

    abort_one();  // a child of the new generation adds to the same counts
    after = settle(3);
    EXPECT_EQ(after.aborts, 3);
    EXPECT_EQ(after.fin, 3);
    EXPECT_EQ(after.monitored, 3);
    EXPECT_TRUE(httpd.stop());
}

INSTANTIATE_TEST_SUITE_P(Mpm, StatusRestart, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
