// HTTP/2: a stream's request is aborted the moment its client resets that
// stream (RST_STREAM) or closes the connection, with reason h2-reset;
// other streams on the same connection go on. mod_http2 sets the stream
// connection's aborted flag; mod_abortguard polls it on the monitor thread
// only while HTTP/2 requests are monitored.
//
// The handler sleeps in one abortguard_wait() (api=1), so it wakes early
// only when mod_abortguard itself aborted the request: without the feature
// it would sleep its full time.
#include <dirent.h>

#include <algorithm>
#include <vector>

#include <fstream>
#include <sstream>
#include <thread>

#include "h2_client.h"
#include "harness.h"

namespace agtest {
namespace {

constexpr int64_t kMaxDetectionUs = 500000;
constexpr int64_t kStoppedEarlyUs = 2500000;
constexpr Millis kIo(10000);

HttpdPool& h2_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "h2-" + mpm;
        o.mpm = mpm;
        o.h2 = true;
        return o;
    });
    return pool;
}

// Voluntary context switches of every "ag-monitor" thread of httpd's
// children: how often the monitor threads woke up.
long monitor_wakeups(pid_t parent) {
    long total = 0;
    std::ifstream children("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) +
                           "/children");
    pid_t child;
    while (children >> child) {
        const std::string tasks = "/proc/" + std::to_string(child) + "/task";
        DIR* d = opendir(tasks.c_str());
        if (d == nullptr)
            continue;
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            std::ifstream comm(tasks + "/" + e->d_name + "/comm");
            std::string name;
            std::getline(comm, name);
            if (name != "ag-monitor")
                continue;
            std::ifstream status(tasks + "/" + e->d_name + "/status");
            for (std::string line; std::getline(status, line);) {
                if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
                    total += std::stol(line.substr(line.find(':') + 1));
            }
        }
        closedir(d);
    }
    return total;
}

class Http2 : public HttpdTest {
  protected:
    HttpdPool& pool() override { return h2_pool(); }
    static void TearDownTestSuite() { h2_pool().stop_all(); }

    void expect_reset_noticed(const AccessLine& line, int64_t sent_us) {
        EXPECT_EQ(line.protocol, "HTTP/2.0") << line.raw;
        EXPECT_EQ(line.aborted, "1") << line.raw;
        EXPECT_EQ(line.reason, "h2-reset") << line.raw;
        ASSERT_TRUE(line.noticed_us) << "abortguard_wait() never woke: " << line.raw;
        const int64_t latency = *line.noticed_us - sent_us;
        EXPECT_GE(latency, 0) << line.raw;
        EXPECT_LT(latency, kMaxDetectionUs) << line.raw;
        ASSERT_TRUE(line.handler_us()) << line.raw;
        EXPECT_LT(*line.handler_us(), kStoppedEarlyUs) << line.raw;
        std::printf("h2_detection_us mpm=%s value=%lld test=%s\n", mpm().c_str(),
                    static_cast<long long>(latency),
                    testing::UnitTest::GetInstance()->current_test_info()->name());
        std::fflush(stdout);
    }
};

TEST_P(Http2, RstStreamAbortsOnlyThatStream) {
    const std::string reset_tag = make_tag(), other_tag = make_tag();
    H2Client h;
    ASSERT_TRUE(h.connect(httpd().port()));
    const uint32_t reset = h.get("/slow?ms=5000&flush=1&api=1&t=" + reset_tag);
    const uint32_t other = h.get("/slow?ms=1500&flush=1&api=1&t=" + other_tag);
    ASSERT_TRUE(h.read_until(reset, "started\n", kIo)) << h.data(reset);
    ASSERT_TRUE(h.read_until(other, "started\n", kIo)) << h.data(other);
    ASSERT_TRUE(h.reset(reset));
    const int64_t reset_us = h.sent_us();
    expect_reset_noticed(await(reset_tag), reset_us);

    // The other stream, on the same connection, completes untouched.
    ASSERT_TRUE(h.read_until_end(other, kIo)) << h.data(other);
    EXPECT_EQ(h.data(other), "started\ndone\n");
    AccessLine line = await(other_tag);
    EXPECT_EQ(line.status, 200) << line.raw;
    EXPECT_EQ(line.aborted, "-") << line.raw;
    EXPECT_FALSE(line.noticed_us) << line.raw;
}

TEST_P(Http2, ClosedConnectionAbortsEveryStream) {
    const std::string a = make_tag(), b = make_tag();
    H2Client h;
    ASSERT_TRUE(h.connect(httpd().port()));
    const uint32_t sa = h.get("/slow?ms=5000&flush=1&api=1&t=" + a);
    const uint32_t sb = h.get("/slow?ms=5000&flush=1&api=1&t=" + b);
    ASSERT_TRUE(h.read_until(sa, "started\n", kIo)) << h.data(sa);
    ASSERT_TRUE(h.read_until(sb, "started\n", kIo)) << h.data(sb);
    h.close();
    const int64_t closed_us = h.sent_us();
    expect_reset_noticed(await(a), closed_us);
    expect_reset_noticed(await(b), closed_us);
}

// A reset reaches a handler waiting in abortguard_wait() at once: the
// monitor checks the flags right after mod_http2 processed the client's
// frames, not at its next poll (100 ms). Loose bound (the figures are
// bench/'s): the median of five resets under 20 ms.
TEST_P(Http2, AResetWakesAWaitingHandlerWithoutWaitingForThePoll) {
    std::vector<int64_t> latencies;
    for (int i = 0; i < 5; ++i) {
        const std::string tag = make_tag();
        H2Client h;
        ASSERT_TRUE(h.connect(httpd().port()));
        const uint32_t s = h.get("/slow?ms=5000&flush=1&api=1&t=" + tag);
        ASSERT_TRUE(h.read_until(s, "started\n", kIo)) << h.data(s);
        ASSERT_TRUE(h.reset(s));
        const int64_t sent = h.sent_us();
        AccessLine line = await(tag);
        ASSERT_TRUE(line.noticed_us) << line.raw;
        latencies.push_back(*line.noticed_us - sent);
    }
    std::sort(latencies.begin(), latencies.end());
    EXPECT_LT(latencies[2], 20000) << "median reset-to-wake-up in us";
    std::printf("h2_wake_us mpm=%s median=%lld max=%lld\n", mpm().c_str(),
                static_cast<long long>(latencies[2]), static_cast<long long>(latencies.back()));
}

// The flags' fallback poll (every 100 ms) runs only while an HTTP/2 request
// is monitored: the monitor threads wake a few times during one and not at
// all once it ended.
TEST_P(Http2, TheFallbackPollIsSlowAndStopsWhenNoStreamIsMonitored) {
    const std::string tag = make_tag();
    H2Client h;
    ASSERT_TRUE(h.connect(httpd().port()));
    const uint32_t s = h.get("/slow?ms=1000&flush=1&api=1&t=" + tag);
    ASSERT_TRUE(h.read_until(s, "started\n", kIo)) << h.data(s);
    const long busy_start = monitor_wakeups(httpd().pid());
    std::this_thread::sleep_for(Millis(300));  // a measuring window
    const long busy = monitor_wakeups(httpd().pid()) - busy_start;
    ASSERT_TRUE(h.read_until_end(s, kIo)) << h.data(s);
    await(tag);
    std::this_thread::sleep_for(Millis(100));  // the last tick finds nothing
    const long idle_start = monitor_wakeups(httpd().pid());
    std::this_thread::sleep_for(Millis(300));
    const long idle = monitor_wakeups(httpd().pid()) - idle_start;
    EXPECT_GE(busy, 1) << "no fallback poll while an HTTP/2 request was monitored?";
    EXPECT_LE(busy, 12) << "more than a slow fallback poll (100 ms) in 300 ms";
    EXPECT_EQ(idle, 0) << "the monitor threads woke while nothing was monitored";
}

INSTANTIATE_TEST_SUITE_P(Mpm, Http2, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
