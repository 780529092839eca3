// Abort detection: a client that leaves (FIN, RST, half-close) while the
// handler computes is noticed at once, flagged in the access log with its
// reason, and the handler (which only polls c->aborted) stops early.
// Every scenario runs under the event, worker and prefork MPMs.
#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

namespace agtest {
namespace {

// Loose bound: precise figures belong to the benchmarks.
constexpr int64_t kMaxDetectionUs = 500000;
// A handler that stopped early ran well below its 5 s.
constexpr int64_t kStoppedEarlyUs = 2500000;
constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);

HttpdPool& detection_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "detection-" + mpm;
        o.mpm = mpm;
        return o;
    });
    return pool;
}

// Detection latencies per MPM, summarised when the suite ends.
std::map<std::string, std::vector<int64_t>>& latencies() {
    static std::map<std::string, std::vector<int64_t>> all;
    return all;
}

class Detection : public HttpdTest {
  protected:
    HttpdPool& pool() override { return detection_pool(); }

    static void TearDownTestSuite() {
        detection_pool().stop_all();
        print_latency_summary();
    }

    static void print_latency_summary() {
        for (auto& [mpm, values] : latencies()) {
            if (values.empty())
                continue;
            std::sort(values.begin(), values.end());
            std::printf(
                "detection_latency_summary mpm=%s n=%zu median_us=%lld "
                "max_us=%lld\n",
                mpm.c_str(), values.size(), static_cast<long long>(values[values.size() / 2]),
                static_cast<long long>(values.back()));
        }
        std::fflush(stdout);
        latencies().clear();  // --gtest_repeat: one summary per round
    }

    // Sends GET url, waits until the handler has flushed "started".
    RawClient start_request(const std::string& url) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(url)));
        EXPECT_TRUE(c.read_until("started\n", kIo)) << "handler did not start: " << c.received();
        return c;
    }

    AccessLine await_line(const std::string& tag) {
        auto line = access().wait_for(tag, kLogWait);
        EXPECT_TRUE(line) << "no access log line for " << tag;
        return line.value_or(AccessLine{});
    }

    // The handler noticed the abort within the bound after the client closed;
    // records the latency for the summary.
    void expect_noticed_quickly(const AccessLine& line, int64_t close_us) {
        ASSERT_TRUE(line.noticed_us) << "handler never saw c->aborted: " << line.raw;
        int64_t latency = *line.noticed_us - close_us;
        EXPECT_GE(latency, 0) << line.raw;
        EXPECT_LT(latency, kMaxDetectionUs) << line.raw;
        latencies()[mpm()].push_back(latency);
        std::printf("detection_latency_us mpm=%s value=%lld test=%s\n", mpm().c_str(),
                    static_cast<long long>(latency),
                    testing::UnitTest::GetInstance()->current_test_info()->name());
        std::fflush(stdout);
    }

    static void expect_stopped_early(const AccessLine& line) {
        ASSERT_TRUE(line.handler_us()) << line.raw;
        EXPECT_LT(*line.handler_us(), kStoppedEarlyUs) << line.raw;
    }
};

TEST_P(Detection, FinWhileHandlerComputes) {
    std::string tag = make_tag();
    RawClient c = start_request("/slow?ms=5000&flush=1&t=" + tag);
    c.close_fin();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "fin") << line.raw;
    expect_noticed_quickly(line, c.close_us());
    expect_stopped_early(line);
}

TEST_P(Detection, RstWhileHandlerComputes) {
    std::string tag = make_tag();
    RawClient c = start_request("/slow?ms=5000&flush=1&t=" + tag);
    c.close_rst();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "rst") << line.raw;
    expect_noticed_quickly(line, c.close_us());
    expect_stopped_early(line);
}

// The client leaves before the handler wrote a single byte: nothing but the
// monitor can tell the handler.
// The handler runs (its mark file appears) but has written nothing yet when
// the client closes. (Had the client closed before the handler started,
// AbortGuardSkipAbandoned would not start it at all: see test_skip.cc.)
TEST_P(Detection, FinBeforeHandlerWrites) {
    std::string tag = make_tag();
    const std::string marks = httpd().run_dir() + "/marks";
    ::mkdir(marks.c_str(), 0777);
    ::chmod(marks.c_str(), 0777);  // the handler writes here as www-data
    const std::string mark = marks + "/" + tag;
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/slow?ms=5000&flush=0&mark=" + mark + "&t=" + tag)));
    for (Deadline d(kIo); ::access(mark.c_str(), F_OK) != 0;) {
        ASSERT_FALSE(d.expired()) << "the handler never started";
        usleep(1000);  // polling for the handler's mark file, with a deadline
    }
    c.close_fin();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "fin") << line.raw;
    expect_noticed_quickly(line, c.close_us());
    expect_stopped_early(line);
}

// AbortGuardHalfClose ignore: a client that shut down its sending side but
// still reads gets its whole response.
TEST_P(Detection, HalfCloseIgnoredWhenConfigured) {
    std::string tag = make_tag();
    RawClient c = start_request("/slow-ignore?ms=500&flush=1&t=" + tag);
    c.half_close();
    EXPECT_TRUE(c.read_until("done\n", kIo)) << c.received();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.status, 200) << line.raw;
    EXPECT_EQ(line.aborted, "-") << line.raw;
    EXPECT_EQ(line.reason, "-") << line.raw;
    EXPECT_FALSE(line.noticed_us) << line.raw;
}

// Default AbortGuardHalfClose abort: the same half-close is an abort.
TEST_P(Detection, HalfCloseIsAbortByDefault) {
    std::string tag = make_tag();
    RawClient c = start_request("/slow?ms=5000&flush=1&t=" + tag);
    c.half_close();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "fin") << line.raw;
    expect_noticed_quickly(line, c.close_us());
    expect_stopped_early(line);
    c.read_all_until_close(kIo);
    EXPECT_EQ(c.received().find("done\n"), std::string::npos) << c.received();
}

// Contrast, AbortGuard Off: stock httpd does not tell a handler that only
// polls c->aborted; it runs its full 1.5 s and nothing is flagged.
TEST_P(Detection, OffLocationDoesNotNotice) {
    std::string tag = make_tag();
    RawClient c = start_request("/off?ms=1500&flush=1&t=" + tag);
    c.close_fin();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "-") << line.raw;
    EXPECT_EQ(line.reason, "-") << line.raw;
    EXPECT_FALSE(line.noticed_us) << line.raw;
    ASSERT_TRUE(line.handler_us()) << line.raw;
    EXPECT_GE(*line.handler_us(), 1500000) << line.raw;
}

// AbortGuardMarkConnection Off: the abort is detected and logged, but
// c->aborted is left alone, so the polling handler runs to the end.
TEST_P(Detection, MarkConnectionOffLogsButHandlerDoesNotNotice) {
    std::string tag = make_tag();
    RawClient c = start_request("/nomark?ms=1500&flush=1&t=" + tag);
    c.close_fin();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "fin") << line.raw;
    EXPECT_FALSE(line.noticed_us) << line.raw;
    ASSERT_TRUE(line.handler_us()) << line.raw;
    EXPECT_GE(*line.handler_us(), 1500000) << line.raw;
}

// A large response the client stops reading and resets: whether the monitor
// (rst) or the failing write (write) tells first, the request is flagged.
TEST_P(Detection, RstDuringLargeResponse) {
    std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/slow?ms=0&bytes=8000000&t=" + tag)));
    ASSERT_TRUE(c.read_at_least(64 * 1024, kIo)) << c.received().size();
    c.close_rst();
    AccessLine line = await_line(tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_TRUE(line.reason == "rst" || line.reason == "write") << line.raw;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Detection, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
