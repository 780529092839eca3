// The module's metrics page (metrics.h) from a real stats block: the
// contract names with their types, one sample per reason, cleanups by
// outcome, the three histograms, the handler table's label values escaped,
// and what a page set up from .htaccess leaves out.
#include <errno.h>
#include <sys/mman.h>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "agmetrics.h"
#include "agstats.h"
#include "metrics.h"

namespace abortguard {
namespace metrics {
namespace {

// A stats block in shared memory, attached as httpd's child would be.
class Block {
  public:
    Block() : len_(ag_stats_block_size(2)) {
        mem_ = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ok_ = mem_ != MAP_FAILED && ag_stats_block_init(mem_, len_, 2, 1700000000) == 0 &&
              ag_stats_attach(mem_, 0, 1234) == 0;
    }
    ~Block() {
        ag_stats_detach();
        if (mem_ != MAP_FAILED)
            munmap(mem_, len_);
    }
    bool ok() const { return ok_; }
    const void* mem() const { return mem_; }
    stats::Snapshot snapshot() const { return static_cast<const stats::Block*>(mem_)->snapshot(); }

  private:
    size_t len_;
    void* mem_;
    bool ok_ = false;
};

// The page, parsed: TYPE by family, sample value by "name{labels}".
struct Page {
    std::map<std::string, std::string> types;
    std::map<std::string, std::string> samples;
    std::string text;

    static Page of(const stats::Snapshot& s, Scope scope) {
        prometheus::StringSink sink;
        write(s, scope, sink);
        Page p;
        p.text = sink.text();
        std::istringstream in(p.text);
        for (std::string line; std::getline(in, line);) {
            if (line.rfind("# TYPE ", 0) == 0) {
                const std::string rest = line.substr(7);
                p.types[rest.substr(0, rest.find(' '))] = rest.substr(rest.find(' ') + 1);
            } else if (!line.empty() && line[0] != '#') {
                p.samples[line.substr(0, line.rfind(' '))] = line.substr(line.rfind(' ') + 1);
            }
        }
        return p;
    }
    bool has_family(const std::string& name) const { return types.count(name) != 0; }
};

const char* const kReasons[] = {"fin",   "rst",      "error",      "timeout",
                                "write", "h2-reset", "server-stop"};

TEST(Metrics, ContractNamesWithTheirTypes) {
    Block b;
    ASSERT_TRUE(b.ok());
    const Page p = Page::of(b.snapshot(), Scope::kServer);
    const std::map<std::string, std::string> expected = {
        {"apache_abortguard_requests_monitored_total", "counter"},
        {"apache_abortguard_aborts_total", "counter"},
        {"apache_abortguard_detection_seconds", "histogram"},
        {"apache_abortguard_request_to_abort_seconds", "histogram"},
        {"apache_abortguard_work_after_abort_seconds", "histogram"},
        {"apache_abortguard_backend_cuts_total", "counter"},
        {"apache_abortguard_cleanups_total", "counter"},
        {"apache_abortguard_cleanups_slow_total", "counter"},
        {"apache_abortguard_locks_released_total", "counter"},
        {"apache_abortguard_terminations_total", "counter"},
        {"apache_abortguard_terminations_refused_total", "counter"},
        {"apache_abortguard_stop_notices_total", "counter"},
        {"apache_abortguard_grace_actions_total", "counter"},
        {"apache_abortguard_requests_cut_at_exit_total", "counter"},
        {"apache_abortguard_requests_skipped_total", "counter"},
        {"apache_abortguard_requests_in_flight", "gauge"},
        {"apache_abortguard_handler_work_after_abort_seconds_total", "counter"},
        {"apache_abortguard_handler_aborted_requests_total", "counter"},
        {"apache_abortguard_restarts_total", "counter"},
        {"apache_abortguard_start_time_seconds", "gauge"},
        {"apache_abortguard_child_slots", "gauge"},
        {"apache_abortguard_child_slots_used", "gauge"},
    };
    EXPECT_EQ(p.types, expected) << p.text;
    for (const char* reason : kReasons) {
        EXPECT_EQ(
            p.samples.at(std::string("apache_abortguard_aborts_total{reason=\"") + reason + "\"}"),
            "0");
    }
    EXPECT_EQ(p.samples.count("apache_abortguard_aborts_total{reason=\"other\"}"), 0u);
    EXPECT_EQ(p.samples.at("apache_abortguard_start_time_seconds"), "1700000000");
    EXPECT_EQ(p.samples.at("apache_abortguard_child_slots"), "2");
    EXPECT_EQ(p.samples.at("apache_abortguard_child_slots_used"), "1");
}

TEST(Metrics, CountsLandInTheirSamples) {
    Block b;
    ASSERT_TRUE(b.ok());
    ag_stats_count(AG_STAT_REQUESTS_MONITORED, 9);
    ag_stats_request_end(1, 1, 0, 2000000);  // fin, 2 ms into the request
    ag_stats_request_end(1, 1, 0, 4000000);
    ag_stats_request_end(1, 6, 0, 1000);  // h2-reset
    ag_stats_abort(12);                   // a reason this build has no name for
    ag_stats_cleanups(5, 2, 1);
    ag_stats_count(AG_STAT_BACKEND_CUTS, 3);
    stats::record_work_after_abort("cgi-script", 1500000000);  // ns
    const Page p = Page::of(b.snapshot(), Scope::kServer);
    EXPECT_EQ(p.samples.at("apache_abortguard_requests_monitored_total"), "9");
    EXPECT_EQ(p.samples.at("apache_abortguard_aborts_total{reason=\"fin\"}"), "2");
    EXPECT_EQ(p.samples.at("apache_abortguard_aborts_total{reason=\"h2-reset\"}"), "1");
    EXPECT_EQ(p.samples.at("apache_abortguard_aborts_total{reason=\"other\"}"), "1");
    EXPECT_EQ(p.samples.at("apache_abortguard_cleanups_total{outcome=\"succeeded\"}"), "3");
    EXPECT_EQ(p.samples.at("apache_abortguard_cleanups_total{outcome=\"failed\"}"), "2");
    EXPECT_EQ(p.samples.at("apache_abortguard_cleanups_slow_total"), "1");
    EXPECT_EQ(p.samples.at("apache_abortguard_backend_cuts_total"), "3");
    EXPECT_EQ(p.samples.at("apache_abortguard_request_to_abort_seconds_count"), "3");
    EXPECT_EQ(p.samples.at("apache_abortguard_request_to_abort_seconds_sum"), "0.006001");
    EXPECT_EQ(p.samples.at("apache_abortguard_work_after_abort_seconds_count"), "1");
    EXPECT_EQ(p.samples.at("apache_abortguard_work_after_abort_seconds_sum"), "1.5");
    EXPECT_EQ(p.samples.at("apache_abortguard_work_after_abort_seconds_bucket{le=\"1.048576\"}"),
              "0");
    EXPECT_EQ(p.samples.at("apache_abortguard_work_after_abort_seconds_bucket{le=\"2.097152\"}"),
              "1");
    EXPECT_EQ(
        p.samples.at(
            "apache_abortguard_handler_work_after_abort_seconds_total{handler=\"cgi-script\"}"),
        "1.5");
    EXPECT_EQ(
        p.samples.at("apache_abortguard_handler_aborted_requests_total{handler=\"cgi-script\"}"),
        "1");
}

TEST(Metrics, HandlerNamesAreEscapedLabelValues) {
    Block b;
    ASSERT_TRUE(b.ok());
    stats::record_work_after_abort("odd\"name\\x\n", 1000);
    stats::record_work_after_abort(nullptr, 1000);
    const Page p = Page::of(b.snapshot(), Scope::kServer);
    EXPECT_EQ(
        p.samples.count(
            "apache_abortguard_handler_aborted_requests_total{handler=\"odd\\\"name\\\\x\\n\"}"),
        1u)
        << p.text;
    EXPECT_EQ(
        p.samples.count("apache_abortguard_handler_aborted_requests_total{handler=\"(none)\"}"), 1u)
        << p.text;
}

// A page set up from .htaccess: the same counters, without other tenants'
// traffic (in flight, handler names).
TEST(Metrics, CountersOnlyScopeLeavesOutInFlightAndHandlers) {
    Block b;
    ASSERT_TRUE(b.ok());
    stats::record_work_after_abort("tenant-a-secret-app", 1000);
    stats::in_flight_enter();
    const Page all = Page::of(b.snapshot(), Scope::kServer);
    const Page some = Page::of(b.snapshot(), Scope::kCountersOnly);
    stats::in_flight_leave();
    EXPECT_EQ(all.samples.at("apache_abortguard_requests_in_flight"), "1");
    EXPECT_NE(all.text.find("tenant-a-secret-app"), std::string::npos);
    EXPECT_EQ(some.text.find("tenant-a-secret-app"), std::string::npos);
    EXPECT_FALSE(some.has_family("apache_abortguard_requests_in_flight"));
    EXPECT_FALSE(some.has_family("apache_abortguard_handler_aborted_requests_total"));
    EXPECT_FALSE(some.has_family("apache_abortguard_handler_work_after_abort_seconds_total"));
    EXPECT_TRUE(some.has_family("apache_abortguard_aborts_total"));
    EXPECT_TRUE(some.has_family("apache_abortguard_work_after_abort_seconds"));
    EXPECT_EQ(some.text.rfind("# Set up outside", 0), 0u) << some.text;
}

// Every sample belongs to the family declared last, with its suffixes for
// a histogram; every family has HELP before TYPE.
TEST(Metrics, SamplesFollowTheirFamily) {
    Block b;
    ASSERT_TRUE(b.ok());
    stats::record_work_after_abort("h", 5);
    const Page p = Page::of(b.snapshot(), Scope::kServer);
    std::istringstream in(p.text);
    std::string family, type, previous;
    std::set<std::string> seen;
    for (std::string line; std::getline(in, line); previous = line) {
        if (line.rfind("# TYPE ", 0) == 0) {
            family = line.substr(7, line.find(' ', 7) - 7);
            type = line.substr(line.rfind(' ') + 1);
            EXPECT_EQ(previous.rfind("# HELP " + family + " ", 0), 0u) << line;
            EXPECT_TRUE(seen.insert(family).second) << "declared twice: " << family;
            continue;
        }
        if (line.empty() || line[0] == '#')
            continue;
        const std::string name = line.substr(0, line.find_first_of("{ "));
        if (type == "histogram") {
            EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" ||
                        name == family + "_count")
                << line;
        } else {
            EXPECT_EQ(name, family) << line;
        }
    }
}

TEST(Metrics, CBoundaryHandsTheWholePageToTheSink) {
    Block b;
    ASSERT_TRUE(b.ok());
    std::string got;
    auto sink = [](const char* text, size_t len, void* ctx) {
        static_cast<std::string*>(ctx)->append(text, len);
    };
    EXPECT_EQ(ag_metrics_render(b.mem(), AG_METRICS_SERVER, sink, &got), 0);
    EXPECT_EQ(got, Page::of(b.snapshot(), Scope::kServer).text);
    got.clear();
    EXPECT_EQ(ag_metrics_render(b.mem(), AG_METRICS_COUNTERS_ONLY, sink, &got), 0);
    EXPECT_EQ(got, Page::of(b.snapshot(), Scope::kCountersOnly).text);
    EXPECT_EQ(ag_metrics_render(nullptr, AG_METRICS_SERVER, sink, &got), ENOENT);
    EXPECT_STREQ(AG_METRICS_CONTENT_TYPE, "text/plain; version=0.0.4");
}

}  // namespace
}  // namespace metrics
}  // namespace abortguard
