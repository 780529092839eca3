// AbortGuardSkipAbandoned: with every worker busy, clients that send a
// request and leave before a worker is free are never handed to a handler
// (each is still logged, with ABORTGUARD_SKIPPED=1); with the directive
// Off, every one of those handlers starts (the contrast). A client that
// half-closes right after its request (printf ... | nc -N) follows
// AbortGuardHalfClose: an empty 503 under "abort", its response under
// "ignore". Every scenario runs under the event, worker and prefork MPMs,
// each with two workers in all.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace agtest {
namespace {

constexpr Millis kIo(10000);
constexpr int kQueued = 10;

HttpdOptions skip_options(const std::string& mpm) {
    HttpdOptions o;
    o.name = "skip-" + mpm;
    o.mpm = mpm;
    o.extra_config =
        "<IfModule mpm_prefork_module>\n  StartServers 2\n  MinSpareServers 1\n"
        "  MaxSpareServers 2\n  ServerLimit 2\n  MaxRequestWorkers 2\n</IfModule>\n"
        "<IfModule !mpm_prefork_module>\n  StartServers 1\n  ServerLimit 1\n  ThreadLimit 2\n"
        "  ThreadsPerChild 2\n  MinSpareThreads 1\n  MaxSpareThreads 2\n"
        "  MaxRequestWorkers 2\n</IfModule>\n"
        "LogFormat \"%{ABORTGUARD_SKIPPED}e %{ABORTGUARD_ABORTED}e %{ABORTGUARD_REASON}e %>s "
        "%U%q\" skip\n"
        "CustomLog \"@RUNDIR@/skip.log\" skip\n"
        "<Location /kept>\n  SetHandler abortguard-test\n  AbortGuardSkipAbandoned Off\n"
        "</Location>\n";
    o.tolerated_log_lines = {kWorkersBusyAdvisories};  // every worker busy, on purpose
    return o;
}

HttpdPool& skip_pool() {
    static HttpdPool pool([](const std::string& mpm) { return skip_options(mpm); });
    return pool;
}

class Skip : public HttpdTest {
  protected:
    HttpdPool& pool() override { return skip_pool(); }
    static void TearDownTestSuite() { skip_pool().stop_all(); }

    void SetUp() override {
        HttpdTest::SetUp();
        if (HasFatalFailure())
            return;
        marks_ = httpd().run_dir() + "/marks-" + make_tag();
        ::mkdir(marks_.c_str(), 0777);
        ::chmod(marks_.c_str(), 0777);  // the handler writes here as www-data
        skip_log_.start(httpd().run_dir() + "/skip.log");
    }

    // Both workers busy until the returned clients' requests end (~1.5 s).
    std::vector<RawClient> occupy_workers() {
        std::vector<RawClient> busy;
        for (int i = 0; i < 2; ++i) {
            busy.push_back(connect());
            // Connection: close: a synchronous MPM's worker would otherwise
            // wait on the kept-alive connection instead of taking the queue.
            EXPECT_TRUE(busy.back().send(
                http_get("/slow?ms=1500&flush=1&t=" + make_tag(), "Connection: close\r\n")));
            EXPECT_TRUE(busy.back().read_until("started\n", kIo));
        }
        return busy;
    }

    void wait_done(std::vector<RawClient>& busy) {
        for (auto& b : busy)
            EXPECT_TRUE(b.read_until("done\n", kIo)) << b.received();
    }

    size_t handlers_started() const {
        size_t n = 0;
        for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(marks_))
            ++n;
        return n;
    }

    // The skip log's lines (since the test began) containing `part`,
    // waiting for `count` of them.
    std::vector<std::string> skip_lines(const std::string& part, size_t count) {
        std::vector<std::string> found;
        for (Deadline d(kIo); !d.expired(); usleep(10000)) {  // polling a log file
            found.clear();
            for (const auto& l : skip_log_.new_lines())
                if (l.find(part) != std::string::npos)
                    found.push_back(l);
            if (found.size() >= count)
                break;
        }
        return found;
    }

    // kQueued clients send `path` and leave at once, while no worker is free.
    void queue_and_leave(const std::string& path, const std::string& tag) {
        std::vector<RawClient> busy = occupy_workers();
        for (int i = 0; i < kQueued; ++i) {
            RawClient c = connect();
            ASSERT_TRUE(c.send(
                http_get(path + "?ms=100&mark=" + marks_ + "/" + std::to_string(i) + "&t=" + tag)));
            c.close_fin();
        }
        wait_done(busy);
    }

    std::string marks_;
    LogCursor skip_log_;
};

TEST_P(Skip, ClientsThatLeftWhileQueuedNeverReachTheirHandler) {
    const std::string tag = make_tag();
    queue_and_leave("/slow", tag);
    const auto lines = skip_lines(tag, kQueued);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kQueued)) << "every request is logged";
    for (const auto& l : lines) {
        EXPECT_EQ(l.rfind("1 1 fin 503 ", 0), 0u) << "skipped, aborted (fin), 503: " << l;
    }
    EXPECT_EQ(handlers_started(), 0u) << "a handler ran for a client that had left";
}

TEST_P(Skip, WithSkipAbandonedOffEveryQueuedRequestStartsItsHandler) {
    const std::string tag = make_tag();
    queue_and_leave("/kept", tag);
    const auto lines = skip_lines(tag, kQueued);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kQueued));
    for (const auto& l : lines)
        EXPECT_EQ(l.rfind("- 1 fin ", 0), 0u) << "handled, then aborted: " << l;
    EXPECT_EQ(handlers_started(), static_cast<size_t>(kQueued));
}

// printf 'GET ...' | nc -N: the request, then the client's FIN at once.
// Under AbortGuardHalfClose abort (the default) that client counts as gone:
// not served, and the connection closes without a response (nothing is
// written to a connection marked aborted). Under ignore it is served.
TEST_P(Skip, AHalfCloseRightAfterTheRequestFollowsTheHalfClosePolicy) {
    for (const std::string path : {"/slow", "/slow-ignore"}) {
        SCOPED_TRACE(path);
        const std::string tag = make_tag();
        std::vector<RawClient> busy = occupy_workers();
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get(path + "?ms=0&t=" + tag, "Connection: close\r\n")));
        c.half_close();
        wait_done(busy);
        ASSERT_TRUE(c.read_all_until_close(kIo)) << c.received();
        const auto line = skip_lines(tag, 1);
        ASSERT_EQ(line.size(), 1u);
        if (path == "/slow") {
            EXPECT_EQ(c.received(), "") << "a response to a client counted as gone";
            EXPECT_EQ(line[0].rfind("1 1 fin 503 ", 0), 0u) << line[0];
        } else {
            EXPECT_EQ(c.received().rfind("HTTP/1.1 200 OK", 0), 0u) << c.received();
            EXPECT_NE(c.received().find("done\n"), std::string::npos) << c.received();
            EXPECT_EQ(line[0].rfind("- - - 200 ", 0), 0u) << line[0];
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Mpm, Skip, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
