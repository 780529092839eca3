// A real Prometheus (Debian's `prometheus` server) scrapes a real httpd's
// metrics page every second; after N aborts, its query API says
// sum(apache_abortguard_aborts_total) == N, by reason too, and the target is
// up with no scrape error. The PromQL queries README.md shows and the
// Grafana dashboard (conf/grafana-abortguard.json) uses are evaluated by
// that Prometheus: each must be valid and return data. The dashboard must
// parse as JSON and use README's queries. Runs under each MPM.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "harness.h"
#include "json.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);
// Loose: on 2 shared cores Prometheus took 0.8 s to be ready and counts
// arrive within two scrapes (1 s apart); the bounds leave room for load.
constexpr Millis kReady(60000);
constexpr Millis kArrive(30000);

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string url_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// The PromQL queries README.md shows: the lines of its ```promql blocks
// that are not comments.
std::vector<std::string> readme_queries() {
    std::vector<std::string> out;
    std::istringstream in(read_file(std::string(AG_SRCDIR) + "/README.md"));
    bool inside = false;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("```", 0) == 0) {
            inside = line == "```promql";
            continue;
        }
        if (inside && !line.empty() && line[0] != '#')
            out.push_back(line);
    }
    return out;
}

// Every "expr" of the dashboard's panels.
std::vector<std::string> dashboard_queries(const Json& dashboard) {
    std::vector<std::string> out;
    for (const Json& panel : dashboard["panels"].items()) {
        for (const Json& target : panel["targets"].items())
            out.push_back(target["expr"].as_string());
    }
    return out;
}

std::optional<Json> dashboard() {
    std::string error;
    auto j =
        Json::parse(read_file(std::string(AG_SRCDIR) + "/conf/grafana-abortguard.json"), &error);
    EXPECT_TRUE(j) << "conf/grafana-abortguard.json: " << error;
    return j;
}

// Prometheus on a free loopback port, scraping `target` (host:port) at
// /metrics every second, its data in `dir`; logs to dir/prometheus.log.
class Prometheus {
  public:
    testing::AssertionResult start(const std::string& dir, const std::string& target) {
        dir_ = dir;
        ::mkdir(dir.c_str(), 0755);
        std::ofstream(dir + "/prometheus.yml")
            << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
               "  evaluation_interval: 1s\n"
               "scrape_configs:\n  - job_name: apache\n    metrics_path: /metrics\n"
               "    static_configs:\n      - targets: ['"
            << target << "']\n";
        port_ = pick_free_port();
        // A file, not a pipe, for its log: nobody reads it while it runs.
        const std::string cmd = "exec prometheus --config.file=" + dir +
                                "/prometheus.yml --storage.tsdb.path=" + dir +
                                "/data --web.listen-address=127.0.0.1:" + std::to_string(port_) +
                                " > " + dir + "/prometheus.log 2>&1";
        if (port_ == 0 || !process_.start({"sh", "-c", cmd}))
            return testing::AssertionFailure() << "cannot start prometheus";
        for (Deadline d(kReady); !d.expired(); std::this_thread::sleep_for(Millis(50))) {
            auto r = get("/-/ready");
            if (r && r->status == 200)
                return testing::AssertionSuccess();
        }
        return testing::AssertionFailure()
               << "prometheus not ready within " << kReady.count() << " ms:\n"
               << log();
    }

    std::string log() const { return read_file(dir_ + "/prometheus.log"); }

    std::optional<HttpResponse> get(const std::string& target) const {
        RawClient c;
        if (!c.connect(port_, Millis(1000)) ||
            !c.send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
            return std::nullopt;
        return c.read_response(kIo);
    }

    // The query API's answer to `expr` (instant query), or nullopt.
    std::optional<Json> query(const std::string& expr) const {
        auto r = get("/api/v1/query?query=" + url_encode(expr));
        if (!r || r->status != 200)
            return std::nullopt;
        return Json::parse(r->body);
    }

    // The value of a one-series instant vector; nullopt when empty.
    std::optional<double> scalar(const std::string& expr) const {
        auto j = query(expr);
        if (!j || (*j)["data"]["result"].items().size() != 1)
            return std::nullopt;
        return std::stod((*j)["data"]["result"].items()[0]["value"].items()[1].as_string());
    }

  private:
    std::string dir_;
    int port_ = 0;
    ChildProcess process_;
};

bool have(const char* program) {
    return run_command({"sh", "-c", std::string("command -v ") + program}, kIo).exit_code == 0;
}

class RealPrometheus : public testing::TestWithParam<std::string> {};

TEST_P(RealPrometheus, ScrapedAbortCountsArriveAndTheQueriesWork) {
    if (std::getenv("AG_TEST_STOCK"))
        GTEST_SKIP() << "stock httpd has no metrics handler";
    if (!have("prometheus"))
        GTEST_SKIP() << "prometheus is not installed (scripts/deps installs it)";
    HttpdOptions o;
    o.name = "prometheus-" + GetParam();
    o.mpm = GetParam();
    o.extra_config =
        "<Location /metrics>\n  SetHandler abortguard-metrics\n  AbortGuard Off\n</Location>\n";
    Httpd httpd(o);
    ASSERT_TRUE(httpd.start());
    AccessLog access;
    access.start(httpd.access_log_path());

    const auto t0 = std::chrono::steady_clock::now();
    Prometheus prom;
    ASSERT_TRUE(
        prom.start(httpd.run_dir() + "/prometheus", "127.0.0.1:" + std::to_string(httpd.port())));
    const auto ready_ms = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - t0);

    // Aborts of two reasons, FIN and RST.
    constexpr int kFin = 3, kRst = 2;
    for (int i = 0; i < kFin + kRst; ++i) {
        const std::string tag = make_tag();
        RawClient c;
        ASSERT_TRUE(c.connect(httpd.port()));
        ASSERT_TRUE(c.send(http_get("/slow?ms=5000&flush=1&t=" + tag)));
        ASSERT_TRUE(c.read_until("started\n", kIo)) << c.received();
        i < kFin ? c.close_fin() : c.close_rst();
        ASSERT_TRUE(access.wait_for(tag, kLogWait)) << "no access log line for " << tag;
    }
    const auto aborted = std::chrono::steady_clock::now();

    // Polled until Prometheus has scraped them (its query API, not our page).
    std::optional<double> total;
    for (Deadline d(kArrive); !d.expired(); std::this_thread::sleep_for(Millis(100))) {
        total = prom.scalar("sum(apache_abortguard_aborts_total)");
        if (total && *total == kFin + kRst)
            break;
    }
    const auto arrived_ms =
        std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - aborted);
    std::printf("prometheus_timing mpm=%s ready_ms=%lld counts_arrived_ms=%lld\n",
                GetParam().c_str(), static_cast<long long>(ready_ms.count()),
                static_cast<long long>(arrived_ms.count()));
    ASSERT_TRUE(total) << "no sum from Prometheus:\n" << prom.log();
    EXPECT_EQ(*total, kFin + kRst) << prom.log();
    EXPECT_EQ(prom.scalar("sum(apache_abortguard_aborts_total{reason=\"fin\"})"), kFin);
    EXPECT_EQ(prom.scalar("sum(apache_abortguard_aborts_total{reason=\"rst\"})"), kRst);
    EXPECT_EQ(prom.scalar("up{job=\"apache\"}"), 1);
    auto targets = prom.get("/api/v1/targets");
    ASSERT_TRUE(targets);
    auto tj = Json::parse(targets->body);
    ASSERT_TRUE(tj) << targets->body;
    for (const Json& t : (*tj)["data"]["activeTargets"].items())
        EXPECT_EQ(t["lastError"].as_string(), "") << targets->body;

    // README's and the dashboard's queries are valid PromQL with data (the
    // rates need two scrapes of a series, so they are polled for).
    std::set<std::string> queries;
    for (const auto& q : readme_queries())
        queries.insert(q);
    auto dash = dashboard();
    ASSERT_TRUE(dash);
    for (const auto& q : dashboard_queries(*dash))
        queries.insert(q);
    EXPECT_GE(queries.size(), 3u);
    for (const auto& q : queries) {
        std::optional<Json> answer;
        for (Deadline d(kArrive); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
            answer = prom.query(q);
            if (answer && !(*answer)["data"]["result"].items().empty())
                break;
        }
        ASSERT_TRUE(answer) << "no answer to " << q;
        EXPECT_EQ((*answer)["status"].as_string(), "success") << q;
        EXPECT_FALSE((*answer)["data"]["result"].items().empty()) << "no data for " << q;
    }
    EXPECT_TRUE(httpd.stop());
}

INSTANTIATE_TEST_SUITE_P(Mpm, RealPrometheus, testing::ValuesIn(all_mpms()), mpm_param_name);

// The dashboard parses, and its panels are built on README's queries.
TEST(GrafanaDashboard, ParsesAndUsesReadmeQueries) {
    auto dash = dashboard();
    ASSERT_TRUE(dash);
    EXPECT_FALSE((*dash)["title"].as_string().empty());
    const std::vector<std::string> used = dashboard_queries(*dash);
    const std::vector<std::string> shown = readme_queries();
    EXPECT_EQ(shown.size(), 3u) << "README shows three queries";
    for (const auto& q : shown)
        EXPECT_NE(std::find(used.begin(), used.end(), q), used.end())
            << "not on the dashboard: " << q;
    for (const Json& panel : (*dash)["panels"].items()) {
        EXPECT_FALSE(panel["title"].as_string().empty());
        EXPECT_FALSE(panel["targets"].items().empty()) << panel["title"].as_string();
    }
}

}  // namespace
}  // namespace agtest
