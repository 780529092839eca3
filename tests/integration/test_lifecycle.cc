// The child lifecycle against a real httpd, under each MPM: the stop notice
// at graceful-stop, keep-alive clients across a graceful restart, the grace
// period for handlers that outlive their client, the bound on a child's exit
// and a restart soak. Handlers: tests/integration/mod_abortguard_lifetest.c.
//
// Each test runs its own httpd: most of them stop it or kill its children.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "h2_client.h"
#include "harness.h"
#include "procfs.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);

// ----------------------------------------------------------------- processes

// Waits (bounded) until `pid` has exited; the monotonic time it was seen gone.
std::optional<int64_t> wait_gone(pid_t pid, Millis timeout) {
    Deadline deadline(timeout);
    for (;;) {
        if (process_gone(pid))
            return monotonic_us();
        if (deadline.expired())
            return std::nullopt;
        usleep(2000);  // polling /proc for an exit, with a deadline
    }
}

// Open descriptors of `pid`, sockets counted apart.
struct FdCount {
    int sockets = 0;
    int others = 0;
};
FdCount count_fds(pid_t pid) {
    FdCount c;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(dir.c_str());
    if (d == nullptr)
        return c;
    char target[256];
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        const ssize_t len = readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
        if (len <= 0)
            continue;
        (std::string(target, len).rfind("socket:", 0) == 0 ? c.sockets : c.others) += 1;
    }
    closedir(d);
    return c;
}

// "word PID" at the start of a line of `text`; 0 if absent.
pid_t pid_after(const std::string& text, const std::string& word) {
    const auto at = text.find(word + " ");
    return at == std::string::npos ? 0 : atoi(text.c_str() + at + word.size() + 1);
}

// ------------------------------------------------------------------ fixture

class LifecycleTest : public testing::TestWithParam<std::string> {
  protected:
    const std::string& mpm() const { return GetParam(); }

    // Starts this test's httpd; `extra` is appended to its configuration.
    testing::AssertionResult start(const std::string& name, const std::string& extra,
                                   std::vector<std::string> tolerated = {},
                                   bool h2_and_tls = false) {
        HttpdOptions o;
        o.h2 = o.tls = h2_and_tls;
        o.name = "life-" + name + "-" + mpm();
        o.mpm = mpm();
        o.extra_config = "LoadModule abortguard_lifetest_module " AG_LIFETEST_SO
                         "\n<Location /life>\n  SetHandler abortguard-lifetest\n</Location>\n"
                         "<Location /agstatus>\n  SetHandler abortguard-status\n</Location>\n" +
                         extra;
        o.tolerated_log_lines = std::move(tolerated);
        httpd_ = std::make_unique<Httpd>(o);
        auto started = httpd_->start();
        if (started)
            errors_.start(httpd_->error_log_path());
        return started;
    }

    void TearDown() override {
        if (httpd_) {
            auto stopped = httpd_->stop();
            EXPECT_TRUE(stopped) << stopped.message();
        }
    }

    Httpd& httpd() { return *httpd_; }

    RawClient connect() {
        RawClient c;
        EXPECT_TRUE(c.connect(httpd_->port())) << "cannot connect to " << httpd_->port();
        return c;
    }

    // Sends `target` and waits for `word` (the handler's first line).
    RawClient begin(const std::string& target, const std::string& word) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(target)));
        EXPECT_TRUE(c.read_until(word + " ", kIo)) << target << ": " << c.received();
        EXPECT_TRUE(c.read_until("\n", kIo));
        return c;
    }

    // A counter of the status page (?auto), over all children; -1 if absent.
    long long status_counter(const std::string& key) {
        RawClient c = connect();
        if (!c.send(http_get("/agstatus?auto", "Connection: close\r\n")))
            return -1;
        auto rsp = c.read_response(kIo);
        if (!rsp)
            return -1;
        const auto at = rsp->body.find("\n" + key + ": ");
        return at == std::string::npos ? -1 : std::atoll(rsp->body.c_str() + at + key.size() + 3);
    }

    // Error-log lines (since start) that contain every one of `parts`.
    std::vector<std::string> log_lines_with(const std::vector<std::string>& parts) {
        std::vector<std::string> out;
        for (const auto& line : errors_.new_lines()) {
            bool all = true;
            for (const auto& p : parts)
                all = all && line.find(p) != std::string::npos;
            if (all)
                out.push_back(line);
        }
        return out;
    }

    // Polls the error log until a line with every one of `parts` appears;
    // the monotonic time it was first seen.
    std::optional<int64_t> await_log(const std::vector<std::string>& parts, Millis timeout,
                                     std::string* line = nullptr) {
        Deadline deadline(timeout);
        for (;;) {
            auto found = log_lines_with(parts);
            if (!found.empty()) {
                if (line != nullptr)
                    *line = found.front();
                return monotonic_us();
            }
            if (deadline.expired())
                return std::nullopt;
            usleep(5000);  // polling a log file for an event, with a deadline
        }
    }

    std::unique_ptr<Httpd> httpd_;
    ErrorLogWatch errors_;
};

// --------------------------------------------------------------- stop notice

// A long-poll waiting in abortguard_wait() learns at graceful-stop that its
// child stops, and ends its response cleanly; the server then exits.
TEST_P(LifecycleTest, StopNoticeReachesALongPollAtGracefulStop) {
    ASSERT_TRUE(start("stop", ""));
    RawClient c = begin("/life?mode=longpoll&max_ms=20000", "started");
    const int64_t signalled = monotonic_us();
    ASSERT_EQ(::kill(httpd().pid(), SIGWINCH), 0);  // apachectl graceful-stop
    ASSERT_TRUE(c.read_until("stopping=", kIo)) << "no stop notice: " << c.received();
    const auto at = c.received().find("stopping ");
    const int64_t noticed = std::stoll(c.received().substr(at + 9));
    EXPECT_NE(c.received().find("stopping=1"), std::string::npos) << c.received();
    const int64_t latency_us = noticed - signalled;
    EXPECT_LT(latency_us, 100000) << "the stop notice took " << latency_us << " us";
    std::printf("stop_notice_us mpm=%s value=%lld\n", mpm().c_str(),
                static_cast<long long>(latency_us));
    // The response completes; with nothing left to wait for, httpd exits.
    EXPECT_TRUE(c.read_all_until_close(kIo)) << c.received();
    EXPECT_TRUE(wait_gone(httpd().pid(), kLogWait)) << "httpd did not finish its graceful stop";
}

// The same under HTTP/2 (a stream of a connection that mod_http2 serves)
// and under TLS: each long-poll learns that its child stops.
TEST_P(LifecycleTest, StopNoticeReachesHttp2AndTlsLongPolls) {
    ASSERT_TRUE(start("stop-h2-tls", "", {}, true));
    H2Client h2;
    ASSERT_TRUE(h2.connect(httpd().port()));
    const uint32_t stream = h2.get("/life?mode=longpoll&max_ms=20000");
    ASSERT_NE(stream, 0u);
    ASSERT_TRUE(h2.read_until(stream, "started", kIo)) << h2.data(stream);
    ChildProcess tls;
    ASSERT_TRUE(
        tls.start({"openssl", "s_client", "-quiet", "-connect",
                   "127.0.0.1:" + std::to_string(httpd().tls_port()), "-servername", "localhost"}));
    ASSERT_TRUE(tls.write(http_get("/life?mode=longpoll&max_ms=20000")));
    ASSERT_TRUE(tls.read_until("started", kIo)) << tls.output();
    ASSERT_EQ(::kill(httpd().pid(), SIGWINCH), 0);  // apachectl graceful-stop
    EXPECT_TRUE(h2.read_until(stream, "stopping=1", kIo)) << "HTTP/2: " << h2.data(stream);
    EXPECT_TRUE(tls.read_until("stopping=1", kIo)) << "TLS: " << tls.output();
}

// With AbortGuardStopAborts On the stop notice is an abort: reason
// server-stop in the access log, wait() says aborted.
TEST_P(LifecycleTest, StopAbortsTurnsTheNoticeIntoAnAbort) {
    ASSERT_TRUE(start("stopaborts", "<Location /life>\n  AbortGuardStopAborts On\n</Location>\n"));
    AccessLog access;
    access.start(httpd().access_log_path());
    RawClient c = begin("/life?mode=longpoll&max_ms=20000&t=sa", "started");
    ASSERT_TRUE(httpd().graceful());
    auto line = access.wait_for("t=sa", kLogWait);
    ASSERT_TRUE(line) << "the long-poll did not end at the graceful restart";
    EXPECT_EQ(line->aborted, "1");
    EXPECT_EQ(line->reason, "server-stop");
    EXPECT_EQ(status_counter("Stop notices"), 1);
    EXPECT_EQ(status_counter("Aborts server stop"), 1);
}

// -------------------------------------------------- keep-alive across restarts

// Browser-like: a request on a kept-alive connection that the server closed
// before answering is retried once on a new connection (RFC 9112 9.3.1).
struct TagAnswer {
    std::string tag;
    bool retried = false;
};
std::optional<TagAnswer> get_tag(RawClient* c, int port) {
    TagAnswer a;
    std::optional<HttpResponse> rsp;
    if (c->send(http_get("/life?mode=tag")))
        rsp = c->read_response(kIo);
    if (!rsp) {
        a.retried = true;
        *c = RawClient();
        if (!c->connect(port) || !c->send(http_get("/life?mode=tag")))
            return std::nullopt;
        rsp = c->read_response(kIo);
    }
    if (!rsp || rsp->status != 200)
        return std::nullopt;
    a.tag = rsp->headers["x-lifetest-tag"];
    return a;
}

// Rewrites the value of LifeTestTag in httpd's configuration file.
void set_tag(Httpd& httpd, const std::string& from, const std::string& to) {
    std::ifstream in(httpd.conf_path());
    std::stringstream ss;
    ss << in.rdbuf();
    std::string conf = ss.str();
    const auto at = conf.find("LifeTestTag " + from);
    ASSERT_NE(at, std::string::npos);
    conf.replace(at, 12 + from.size(), "LifeTestTag " + to);
    std::ofstream out(httpd.conf_path(), std::ios::trunc);
    out << conf;
}

// The measured scenario: a keep-alive client idle across a graceful restart
// that changes a response header. Returns how long after the restart signal
// the server closed the idle connection (nullopt: not within 3 s).
std::optional<int64_t> keepalive_across_restart(Httpd& httpd, std::string* next_tag,
                                                bool* retried) {
    RawClient c;
    EXPECT_TRUE(c.connect(httpd.port()));
    auto first = get_tag(&c, httpd.port());
    EXPECT_TRUE(first && first->tag == "v1" && !first->retried);
    set_tag(httpd, "v1", "v2");
    // Watch the idle connection while the restart runs: does the old child
    // let go of it? (3 s: shorter than KeepAliveTimeout, 5 s.)
    std::optional<int64_t> closed_after;
    const int64_t signalled = monotonic_us();
    std::thread watch([&] {
        if (c.read_all_until_close(Millis(3000)))
            closed_after = monotonic_us() - signalled;
    });
    const auto restarted = httpd.graceful();
    watch.join();
    EXPECT_TRUE(restarted) << restarted.message();
    auto next = get_tag(&c, httpd.port());
    EXPECT_TRUE(next);
    *next_tag = next ? next->tag : "";
    *retried = next && next->retried;
    return closed_after;
}

TEST_P(LifecycleTest, KeepAliveClientSeesTheNewConfigurationAfterAGracefulRestart) {
    ASSERT_TRUE(start("keepalive", "LifeTestTag v1\n"));
    std::string tag;
    bool retried = false;
    const auto closed_after = keepalive_across_restart(httpd(), &tag, &retried);
    EXPECT_EQ(tag, "v2") << "the old child answered on the kept-alive connection";
    EXPECT_TRUE(closed_after) << "the idle connection stayed open after the restart";
    std::printf("keepalive_idle_closed_us mpm=%s value=%lld retried=%d\n", mpm().c_str(),
                static_cast<long long>(closed_after.value_or(-1)), retried ? 1 : 0);
}

// What stock httpd does (no mod_abortguard): a measurement for the notes,
// not a requirement. Run with --gtest_also_run_disabled_tests.
TEST_P(LifecycleTest, DISABLED_StockKeepAliveAcrossAGracefulRestart) {
    HttpdOptions o;
    o.name = "life-stock-" + mpm();
    o.mpm = mpm();
    o.load_abortguard = false;
    o.extra_config = "LoadModule abortguard_lifetest_module " AG_LIFETEST_SO
                     "\n<Location /life>\n  SetHandler abortguard-lifetest\n</Location>\n"
                     "LifeTestTag v1\n";
    httpd_ = std::make_unique<Httpd>(o);
    ASSERT_TRUE(httpd_->start());
    std::string tag;
    bool retried = false;
    const auto closed_after = keepalive_across_restart(httpd(), &tag, &retried);
    std::printf("stock_keepalive mpm=%s idle_closed_us=%lld next_tag=%s retried=%d\n",
                mpm().c_str(), static_cast<long long>(closed_after.value_or(-1)), tag.c_str(),
                retried ? 1 : 0);
}

// ---------------------------------------------------------------- grace period

// A directory httpd's children (www-data under root) can write into.
std::string shared_dir(Httpd& httpd) {
    const std::string dir = httpd.run_dir() + "/shared";
    mkdir(dir.c_str(), 0777);
    chmod(dir.c_str(), 0777);
    return dir;
}

std::string make_lock_file(Httpd& httpd, const std::string& name) {
    const std::string path = shared_dir(httpd) + "/" + name;
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    EXPECT_GE(fd, 0) << path;
    fchmod(fd, 0666);
    close(fd);
    return path;
}

// Whether this process can take the lock right now (OFD locks, as the
// module's); releases it at once.
bool lock_is_free(const std::string& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    const bool free = fcntl(fd, F_OFD_SETLK, &fl) == 0;
    close(fd);
    return free;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A handler that ignores its client's abort and holds a lock is logged once,
// after the grace period; a request that was not aborted never is.
TEST_P(LifecycleTest, GracePeriodLogsAHandlerStillRunningForAClientThatLeft) {
    ASSERT_TRUE(start("grace-log", "AbortGuardGracePeriod 1s\nAbortGuardGraceAction log\n",
                      {"AG0601: the handler abortguard-lifetest for /life/hang "}));
    const std::string lock = make_lock_file(httpd(), "grace.lock");
    AccessLog access;
    access.start(httpd().access_log_path());
    RawClient hung = begin("/life/hang?mode=hang&hold_ms=3000&path=" + lock, "locked");
    RawClient busy = begin("/life/poll?mode=longpoll&max_ms=2500", "started");
    const int64_t aborted = monotonic_us();
    hung.close_rst();
    std::string line;
    const auto seen = await_log({"AG0601", "/life/hang"}, kIo, &line);
    ASSERT_TRUE(seen) << "no grace-period warning";
    const int64_t after_us = *seen - aborted;
    EXPECT_GE(after_us, 900000) << "logged before the grace period ended";
    EXPECT_LE(after_us, 2000000);
    EXPECT_NE(line.find("1 lock(s) held: " + lock + " (ex"), std::string::npos) << line;
    EXPECT_NE(line.find("after its client left (rst)"), std::string::npos) << line;
    EXPECT_FALSE(lock_is_free(lock)) << "log only: the hung handler keeps its lock";
    std::printf("grace_log_us mpm=%s value=%lld\n", mpm().c_str(),
                static_cast<long long>(after_us));
    // Both requests end on their own; still one warning, for the aborted one.
    EXPECT_TRUE(busy.read_until("timeout", kIo)) << busy.received();
    EXPECT_TRUE(access.wait_for("mode=hang", kIo));
    EXPECT_EQ(log_lines_with({"AG0601"}).size(), 1u);
    EXPECT_EQ(status_counter("Grace period actions"), 1);
}

// With terminate, the monitor thread runs the hung request's abort cleanups
// (aborted=2), releases its lock within the grace period + 1 s, and the
// child exits so that the parent replaces it.
TEST_P(LifecycleTest, GraceTerminateReleasesTheLockAndReplacesTheChild) {
    ASSERT_TRUE(start("grace-term",
                      "AbortGuardGracePeriod 1s\nAbortGuardGraceAction terminate\n"
                      "AbortGuardExitTimeout 2s\nAbortGuardTerminateInterval 1s\n",
                      {"AG060[123789]: "}));
    const std::string lock = make_lock_file(httpd(), "term.lock");
    RawClient hung = begin("/life/hang?mode=hang&hold_ms=20000&path=" + lock, "locked");
    const pid_t child = pid_after(hung.received(), "locked");
    ASSERT_GT(child, 0) << hung.received();
    const int64_t aborted = monotonic_us();
    hung.close_rst();
    std::optional<int64_t> free_at;
    for (Deadline d(kIo); !d.expired() && !free_at;) {
        if (lock_is_free(lock))
            free_at = monotonic_us();
        else
            usleep(2000);  // polling the lock's state, with a deadline
    }
    ASSERT_TRUE(free_at) << "the hung handler's lock was never released";
    const int64_t released_us = *free_at - aborted;
    EXPECT_GE(released_us, 900000) << "released before the grace period ended";
    EXPECT_LE(released_us, 2000000) << "not within the grace period + 1 s";
    const auto gone = wait_gone(child, kIo);
    ASSERT_TRUE(gone) << "child " << child << " still runs";
    EXPECT_NE(read_text(lock + ".cleanup").find("aborted=2 pid=" + std::to_string(child)),
              std::string::npos)
        << "the abort cleanup did not run on the monitor thread";
    // Another request, in a replacement child, gets the lock.
    RawClient next = begin("/life/lock?mode=lock&timeout_ms=2000&path=" + lock, "locked");
    const pid_t replacement = pid_after(next.received(), "locked");
    EXPECT_GT(replacement, 0);
    EXPECT_NE(replacement, child);
    EXPECT_EQ(log_lines_with({"AG0608", "drained"}).size(), 1u);
    std::printf("grace_terminate mpm=%s lock_free_us=%lld child_gone_us=%lld\n", mpm().c_str(),
                static_cast<long long>(released_us), static_cast<long long>(*gone - aborted));
}

// ------------------------------------------------------- terminate: the drain

// The three clients of the issue: a hung handler holding a lock, a request
// waiting for that lock, and an unrelated long-poll, all in one child.
struct DrainScene {
    RawClient hung, waiter, poll;
    pid_t child = 0;
};

// Release, drain, exit: when the hung request's client leaves, its lock is
// released after the grace period, the waiter gets it and answers, the
// long-poll answers (the drain gives it the stop notice), and only then does
// the child exit; the parent replaces it. Under prefork each request has a
// child of its own, so there is nothing to drain: see the next test.
TEST_P(LifecycleTest, TerminateLetsTheChildsOtherRequestsFinishBeforeItExits) {
    if (mpm() == "prefork")
        GTEST_SKIP() << "one request per child: nothing else in flight to drain";
    ASSERT_TRUE(start("drain",
                      "ServerLimit 1\nMaxRequestWorkers 8\nAbortGuardGracePeriod 1s\n"
                      "AbortGuardGraceAction terminate\nAbortGuardExitTimeout 5s\n"
                      "AbortGuardTerminateInterval 1s\n",
                      // One child, quiescing while it drains: the parent has
                      // no room to start its replacement yet, and says so.
                      {"AG060[1235789]: ", "AG0613: ", kWorkersBusyAdvisories}));
    const std::string lock = make_lock_file(httpd(), "drain.lock");
    DrainScene s;
    s.hung = begin("/life/hang?mode=hang&hold_ms=30000&path=" + lock, "locked");
    s.child = pid_after(s.hung.received(), "locked");
    ASSERT_GT(s.child, 0);
    s.waiter = connect();
    ASSERT_TRUE(s.waiter.send(
        http_get("/life/lock?mode=lock&timeout_ms=8000&path=" + lock, "Connection: close\r\n")));
    s.poll = begin("/life/poll?mode=longpoll&max_ms=8000", "started");
    ASSERT_EQ(pid_after(s.poll.received(), "started"), s.child) << "one child serves all three";
    const int64_t aborted = monotonic_us();
    s.hung.close_rst();
    ASSERT_TRUE(s.waiter.read_all_until_close(kLogWait)) << s.waiter.received();
    const int64_t waiter_done = monotonic_us();
    EXPECT_NE(s.waiter.received().find("HTTP/1.1 200"), std::string::npos) << s.waiter.received();
    EXPECT_NE(s.waiter.received().find("locked " + std::to_string(s.child)), std::string::npos)
        << "the waiter got the lock: " << s.waiter.received();
    EXPECT_LE(waiter_done - aborted, 2500000) << "not within the grace period + 1.5 s";
    ASSERT_TRUE(s.poll.read_all_until_close(kLogWait)) << s.poll.received();
    EXPECT_NE(s.poll.received().find("stopping"), std::string::npos)
        << "the long-poll answered in full: " << s.poll.received();
    ASSERT_TRUE(wait_gone(s.child, kLogWait)) << "the child never exited";
    EXPECT_EQ(log_lines_with({"AG0608", "drained"}).size(), 1u);
    EXPECT_TRUE(log_lines_with({"AG0609"}).empty()) << "nothing was cut";
    // The parent replaces it.
    RawClient next;
    for (Deadline d(kLogWait); !d.expired();) {
        next = connect();
        if (next.send(http_get("/life/tag?mode=tag", "Connection: close\r\n")) &&
            next.read_until("tag ", kIo) && next.read_until("\n", kIo))
            break;
        usleep(20000);  // the replacement child starting, polled with a deadline
    }
    const pid_t replacement = pid_after(next.received(), "-");
    EXPECT_GT(replacement, 0) << next.received();
    EXPECT_NE(replacement, s.child);
    std::printf("terminate_drain mpm=%s waiter_us=%lld\n", mpm().c_str(),
                static_cast<long long>(waiter_done - aborted));
}

// A request that outlives the drain's bound is named, counted, and cut.
TEST_P(LifecycleTest, RequestsThatOutliveTheDrainAreNamedAndCounted) {
    if (mpm() == "prefork")
        GTEST_SKIP() << "one request per child: nothing else in flight to drain";
    ASSERT_TRUE(start("drain-cut",
                      "ServerLimit 1\nMaxRequestWorkers 8\nAbortGuardGracePeriod 1s\n"
                      "AbortGuardGraceAction terminate\nAbortGuardExitTimeout 1s\n"
                      "AbortGuardTerminateInterval 1s\n",
                      {"AG060[1235789]: ", "AG0612: ", "AG0613: ", kWorkersBusyAdvisories}));
    const std::string lock = make_lock_file(httpd(), "cut.lock");
    RawClient hung = begin("/life/hang?mode=hang&hold_ms=30000&path=" + lock, "locked");
    const pid_t child = pid_after(hung.received(), "locked");
    // Knows nothing of the module and ignores the stop notice.
    RawClient stubborn = connect();
    ASSERT_TRUE(stubborn.send(http_get("/slow?ms=20000&poll=0&flush=1")));
    ASSERT_TRUE(stubborn.read_until("started\n", kIo));
    hung.close_rst();
    ASSERT_TRUE(wait_gone(child, kLogWait));
    std::string line;
    ASSERT_TRUE(await_log({"AG0609", "/slow"}, kIo, &line)) << "the cut request is not named";
    EXPECT_NE(line.find("abortguard-test"), std::string::npos) << line;
    EXPECT_EQ(log_lines_with({"AG0612", "1 request(s) cut"}).size(), 1u);
    EXPECT_EQ(status_counter("Requests cut at exit"), 1);
    EXPECT_EQ(status_counter("Terminations"), 1);
}

// F4: the grace period measures the handler. One that returned promptly,
// whose rollback takes 2 s with a 1 s grace period, is not terminated: the
// rollback finishes under its lock and the child lives on.
TEST_P(LifecycleTest, ARollbackLongerThanTheGracePeriodFinishesUnderItsLock) {
    ASSERT_TRUE(start("rollback",
                      "AbortGuardGracePeriod 1s\nAbortGuardGraceAction terminate\n"
                      "AbortGuardTerminateInterval 1s\nAbortGuardCleanupWarn 1m\n"));
    const std::string lock = make_lock_file(httpd(), "rollback.lock");
    RawClient c = begin("/life/rb?mode=rollback&cleanup_ms=2000&path=" + lock, "locked");
    const pid_t child = pid_after(c.received(), "locked");
    c.close_fin();
    std::string marker;
    for (Deadline d(kLogWait); !d.expired() && marker.empty();) {
        marker = read_text(lock + ".cleanup");
        if (marker.empty())
            usleep(20000);  // the rollback's marker file, polled with a deadline
    }
    EXPECT_NE(marker.find("rolled_back held_throughout=1"), std::string::npos)
        << "the rollback did not finish under its lock: " << marker;
    EXPECT_TRUE(log_lines_with({"AG0601"}).empty()) << "the grace action fired";
    EXPECT_TRUE(log_lines_with({"AG0602"}).empty());
    EXPECT_FALSE(process_gone(child)) << "the child was ended";
}

// Not a weapon: a client that aborts a slow URL every 100 ms, whose handler
// ignores aborts, ends at most one child per AbortGuardTerminateInterval.
TEST_P(LifecycleTest, TheRateBoundHoldsAgainstAClientThatAbortsEvery100ms) {
    ASSERT_TRUE(start("rate",
                      "AbortGuardGracePeriod 1s\nAbortGuardGraceAction terminate\n"
                      "AbortGuardExitTimeout 1s\nAbortGuardTerminateInterval 3s\n",
                      {"AG060[1235789]: ", "AG061[23]: ", "AG0620: ", kWorkersBusyAdvisories}));
    const int64_t began = monotonic_us();
    int sent = 0;
    for (Deadline d(Millis(5000)); !d.expired(); ++sent) {
        RawClient c = connect();
        if (c.send(http_get("/slow?ms=4000&poll=0&flush=1")) && c.read_until("started\n", kIo))
            c.close_rst();
        usleep(100000);  // the attacker's pace
    }
    // Every grace period that started has ended.
    usleep(1500000);  // the last abort's grace period running out, not a sync
    const double seconds = (monotonic_us() - began) / 1e6;
    const long long terminations = status_counter("Terminations");
    const long long refused = status_counter("Terminations refused by the rate bound");
    EXPECT_GE(sent, 15);
    EXPECT_GE(terminations, 0);
    EXPECT_LE(terminations, static_cast<long long>(seconds / 3) + 1)
        << "more than one per interval";
    EXPECT_GT(refused, 0) << "the bound refused nothing";
    std::printf("terminate_rate mpm=%s aborts=%d seconds=%.1f terminations=%lld refused=%lld\n",
                mpm().c_str(), sent, seconds, terminations, refused);
}

// F13: SIGTERM reaches a prefork child anywhere in a request that allocates
// and locks all the time; its exit never runs the request's teardown inside
// the signal handler, so it always ends within the exit timeout, quietly.
TEST_P(LifecycleTest, SigtermAtRandomPointsOfARequestNeverHangsTheExit) {
    if (mpm() != "prefork")
        GTEST_SKIP() << "SIGTERM runs the teardown in a signal handler under prefork only";
    ASSERT_TRUE(start("sigterm", "AbortGuardExitTimeout 2s\n"));
    const std::string lock = make_lock_file(httpd(), "churn.lock");
    std::mt19937 rng(12345);
    int64_t slowest = 0;
    const int rounds = 40;
    for (int i = 0; i < rounds; ++i) {
        RawClient c = begin("/life/churn?mode=churn&ms=5000&path=" + lock, "started");
        const pid_t child = pid_after(c.received(), "started");
        ASSERT_GT(child, 0);
        usleep(std::uniform_int_distribution<int>(0, 20000)(rng));  // a random point
        const int64_t sent = monotonic_us();
        ASSERT_EQ(kill(child, SIGTERM), 0);
        const auto gone = wait_gone(child, kLogWait);
        ASSERT_TRUE(gone) << "child " << child << " never exited";
        slowest = std::max(slowest, *gone - sent);
    }
    EXPECT_LT(slowest, 1500000) << "an exit waited for the watchdog (2 s)";
    EXPECT_TRUE(log_lines_with({"AG0620"}).empty()) << "the exit watchdog had to act";
    std::printf("sigterm_exit mpm=%s rounds=%d slowest_us=%lld\n", mpm().c_str(), rounds,
                static_cast<long long>(slowest));
}

// F9: with pipelining, the first request's log (its buffered response
// written out by the second's 100-continue) must not mark the connection
// idle while the second reads its body: a graceful stop then cuts nothing.
TEST_P(LifecycleTest, AGracefulStopNeverCutsAPipelinedUploadsBody) {
    if (mpm() == "event")
        GTEST_SKIP() << "the event MPM keeps idle connections itself";
    ASSERT_TRUE(start("pipeline", ""));
    constexpr size_t kBody = 200000, kChunk = 10000;
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/slow?ms=0") +
                       "POST /upload?delay_ms=5 HTTP/1.1\r\n"
                       "Host: localhost\r\nExpect: 100-continue\r\n"
                       "Content-Length: " +
                       std::to_string(kBody) + "\r\n\r\n"));
    ASSERT_TRUE(c.read_until("100 Continue", kIo)) << c.received();
    // The first request is logged by now (its response went out with the
    // 100); the upload handler waits for the body: the stop comes here.
    ASSERT_TRUE(httpd().graceful());
    const std::string chunk(kChunk, 'u');
    for (size_t sent = 0; sent < kBody; sent += kChunk) {
        ASSERT_TRUE(c.send(chunk));
        usleep(10000);  // an upload's pace
    }
    ASSERT_TRUE(c.read_until("received", kLogWait)) << c.received();
    ASSERT_TRUE(c.read_until("\n", kIo));
    EXPECT_NE(c.received().find("received " + std::to_string(kBody)), std::string::npos)
        << c.received();
}

// ------------------------------------------------------------------ exit bound

// A cleanup that hangs in a stopping child ends the child after
// AbortGuardExitTimeout, with a line that says what it waited for.
TEST_P(LifecycleTest, AHangingCleanupDoesNotKeepAStoppingChildBeyondTheExitTimeout) {
    ASSERT_TRUE(start("exit", "AbortGuardExitTimeout 1s\n", {"AG0620: "}));
    RawClient c = connect();
    ASSERT_TRUE(c.send(
        http_get("/life/cleanup?mode=hangcleanup&cleanup_ms=30000", "Connection: close\r\n")));
    auto rsp = c.read_response(kIo);
    ASSERT_TRUE(rsp && rsp->status == 200);
    const pid_t child = pid_after(rsp->body, "done");
    ASSERT_GT(child, 0) << rsp->body;
    const int64_t restart = monotonic_us();
    ASSERT_TRUE(httpd().graceful());
    const auto gone = wait_gone(child, kLogWait);
    ASSERT_TRUE(gone) << "the child with the hung cleanup still runs";
    const int64_t exit_us = *gone - restart;
    EXPECT_GE(exit_us, 900000) << "ended before the exit timeout";
    EXPECT_LE(exit_us, 2500000) << "not within the exit timeout (1 s) + slack";
    std::string line;
    ASSERT_TRUE(await_log({"AG0620", "/life/cleanup"}, kIo, &line));
    EXPECT_NE(line.find(module_file_name("lifetest")), std::string::npos)
        << "the line names the cleanup: " << line;
    std::printf("exit_bound_us mpm=%s value=%lld\n", mpm().c_str(),
                static_cast<long long>(exit_us));
}

// A child-exit cleanup that hangs (here one that runs after mod_abortguard's
// own: the monitor thread must outlive that one) does not keep the child.
TEST_P(LifecycleTest, AHangingChildExitCleanupDoesNotKeepTheChildBeyondTheExitTimeout) {
    ASSERT_TRUE(start("exit-teardown", "AbortGuardExitTimeout 1s\nLifeTestHangAtExit 30000\n",
                      {"AG0620: "}));
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/life/tag?mode=tag", "Connection: close\r\n")));
    auto rsp = c.read_response(kIo);
    ASSERT_TRUE(rsp && rsp->status == 200);
    const pid_t child = pid_after(rsp->body, "tag -");
    ASSERT_GT(child, 0) << rsp->body;
    // Closed by the client too, so httpd's lingering close (up to 2 s for
    // a client that keeps its side open) ends at once.
    c.close_fin();
    const int64_t restart = monotonic_us();
    ASSERT_TRUE(httpd().graceful());
    const auto gone = wait_gone(child, kLogWait);
    ASSERT_TRUE(gone) << "the child with the hung exit cleanup still runs";
    const int64_t exit_us = *gone - restart;
    EXPECT_LE(exit_us, 2500000) << "not within the exit timeout (1 s) + slack";
    std::string line;
    ASSERT_TRUE(await_log({"AG0620", "its exit began"}, kIo, &line));
    EXPECT_NE(line.find("after mod_abortguard's own"), std::string::npos) << line;
    std::printf("exit_teardown_us mpm=%s value=%lld\n", mpm().c_str(),
                static_cast<long long>(exit_us));
}

// --------------------------------------------------------------------- soak

int soak_seconds() {
    const char* s = std::getenv("AG_SOAK_SECONDS");
    return s != nullptr && atoi(s) > 0 ? atoi(s) : 15;
}

// One client thread's keep-alive connection, browser-like: a request on a
// reused connection that the server closed before any byte of the answer
// is retried once on a new connection.
class SoakClient {
  public:
    explicit SoakClient(int port) : port_(port) {}

    // The body of a 200 answer; nullopt (and `why`) on a failure.
    std::optional<std::string> get(const std::string& target, bool* retried, std::string* why) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            const bool reused = c_.is_open() && used_;
            if (!c_.is_open() && !c_.connect(port_)) {
                *why = "connect failed";
                return std::nullopt;
            }
            used_ = true;
            const size_t before = c_.received().size();
            std::optional<HttpResponse> rsp;
            if (c_.send(http_get(target)))
                rsp = c_.read_response(Millis(10000));
            if (rsp) {
                if (rsp->headers["connection"] == "close")
                    drop();
                if (rsp->status != 200) {
                    *why = "status " + std::to_string(rsp->status);
                    return std::nullopt;
                }
                return rsp->body;
            }
            const bool nothing = c_.received().size() == before;
            drop();
            if (!(reused && nothing)) {
                *why = nothing ? "no answer on a new connection" : "a partial answer";
                return std::nullopt;
            }
            *retried = true;
        }
        *why = "no answer after a retry";
        return std::nullopt;
    }

    void drop() {
        c_ = RawClient();
        used_ = false;
    }

  private:
    int port_;
    RawClient c_;
    bool used_ = false;
};

// Graceful restarts every 2 s under load, with monitored long-polls and
// clients that abort at random: no crash, no failed request that was not
// aborted, old children (and their monitor threads) exit, no descriptor
// leaks across generations. AG_SOAK_SECONDS sets the length (make soak: 60).
TEST_P(LifecycleTest, SoakGracefulRestartsUnderLoad) {
    ASSERT_TRUE(start("soak", ""));
    ASSERT_TRUE(httpd().graceful());  // what a restart opens once is opened now
    const pid_t parent = httpd().pid();
    const FdCount parent_fds = count_fds(parent);

    std::atomic<bool> done{false};
    std::atomic<int> ok{0}, aborted{0}, retried{0}, stopped{0};
    std::mutex mu;
    std::vector<std::string> failures;
    std::set<pid_t> served_by;  // children seen answering
    auto load = [&](unsigned seed) {
        std::mt19937 rng(seed);
        SoakClient client(httpd().port());
        while (!done.load()) {
            const int kind = static_cast<int>(rng() % 100);
            const int ms = static_cast<int>(rng() % 200);
            if (kind < 25) {
                // A client that leaves while its request is handled.
                RawClient c;
                if (!c.connect(httpd().port()) ||
                    !c.send(http_get("/life/poll?mode=longpoll&max_ms=" + std::to_string(ms + 50))))
                    continue;
                c.read_until("started ", Millis(rng() % 40));  // shapes the load, no sync
                (rng() % 2) ? c.close_rst() : c.close_fin();
                aborted.fetch_add(1);
                continue;
            }
            bool again = false;
            std::string why;
            const std::string target = "/life/poll?mode=longpoll&max_ms=" + std::to_string(ms);
            auto body = client.get(target, &again, &why);
            if (again)
                retried.fetch_add(1);
            std::lock_guard<std::mutex> lock(mu);
            if (!body || (body->find("timeout\n") == std::string::npos &&
                          body->find("stopping ") == std::string::npos)) {
                failures.push_back(target + ": " + (body ? "body " + *body : why));
                client.drop();
                continue;
            }
            ok.fetch_add(1);
            if (body->find("stopping ") != std::string::npos)
                stopped.fetch_add(1);
            served_by.insert(pid_after(*body, "started"));
        }
    };
    std::vector<std::thread> clients;
    for (unsigned i = 0; i < 4; ++i)
        clients.emplace_back(load, 1234 + i);

    const auto began = std::chrono::steady_clock::now();
    const auto end = began + std::chrono::seconds(soak_seconds());
    std::set<pid_t> old_children;
    int restarts = 0;
    for (auto next = began + std::chrono::seconds(2); next < end; next += std::chrono::seconds(2)) {
        std::this_thread::sleep_until(next);  // the pace of the restarts
        {
            std::lock_guard<std::mutex> lock(mu);
            old_children.insert(served_by.begin(), served_by.end());
            for (pid_t p : children_of(parent))
                old_children.insert(p);
        }
        // As `apachectl graceful` does: signal, do not wait for the result.
        ASSERT_EQ(::kill(parent, SIGUSR1), 0);
        ++restarts;
    }
    std::this_thread::sleep_until(end);
    done = true;
    for (auto& t : clients)
        t.join();
    // Every restart made a generation that came up (AH00163/AH00292 lines:
    // the first start, the warm-up restart and ours).
    size_t generations = 0;
    for (Deadline d(kLogWait); !d.expired();) {
        generations = log_lines_with({"resuming normal operations"}).size();
        if (generations >= static_cast<size_t>(restarts) + 1)
            break;
        usleep(10000);  // polling the log for an event, with a deadline
    }
    EXPECT_GE(generations, static_cast<size_t>(restarts) + 1);

    {
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_TRUE(failures.empty())
            << failures.size() << " request(s) failed, e.g. " << failures.front();
    }
    EXPECT_GT(ok.load(), 5 * soak_seconds()) << "too little load to mean anything";
    // Every child of an earlier generation exits, with its monitor thread.
    std::vector<pid_t> lingering;
    for (pid_t p : old_children) {
        if (p > 0 && !wait_gone(p, kLogWait))
            lingering.push_back(p);
    }
    EXPECT_TRUE(lingering.empty())
        << lingering.size() << " old child(ren) still run, e.g. pid " << lingering.front();
    // Each child has one monitor thread once it has started; a child the
    // parent forked a moment ago (spare-thread maintenance) may not have
    // got there yet, so each is awaited, with a deadline (one that exited
    // meanwhile cannot leak a thread).
    for (pid_t p : children_of(parent)) {
        const auto monitors = started_monitor_threads(p, static_cast<int>(kLogWait.count()));
        if (!process_gone(p)) {
            EXPECT_EQ(monitors.size(), 1u) << "child " << p;
        }
    }
    EXPECT_TRUE(threads_named(parent, "ag-monitor").empty()) << "the parent runs a monitor thread";
    const FdCount parent_after = count_fds(parent);
    EXPECT_EQ(parent_after.others, parent_fds.others) << "the parent leaked descriptors";
    EXPECT_EQ(parent_after.sockets, parent_fds.sockets) << "the parent leaked sockets";
    std::printf(
        "soak mpm=%s seconds=%d restarts=%d ok=%d aborted=%d retried=%d stopped=%d "
        "old_children=%zu\n",
        mpm().c_str(), soak_seconds(), restarts, ok.load(), aborted.load(), retried.load(),
        stopped.load(), old_children.size());
}

// -------------------------------------------------------------- directives

TEST(LifecycleConfig, GoodDirectivesPass) {
    CommandResult r = syntax_check(
        "AbortGuardGracePeriod 2m\nAbortGuardGraceAction terminate\nAbortGuardExitTimeout off\n"
        "<Location /x>\n  AbortGuardStopAborts On\n</Location>\n");
    EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(LifecycleConfig, BadValuesAreRejectedWithTheDirectiveAndWhatItAccepts) {
    struct Case {
        std::string line, directive;
        std::vector<std::string> words;
    };
    for (const Case& c : std::vector<Case>{
             {"AbortGuardGracePeriod 30", "AbortGuardGracePeriod", {"duration", "ms", "off"}},
             {"AbortGuardExitTimeout 1.5s", "AbortGuardExitTimeout", {"duration", "ms", "off"}},
             {"AbortGuardGraceAction kill", "AbortGuardGraceAction", {"log", "terminate"}},
             {"AbortGuardStopAborts maybe", "AbortGuardStopAborts", {"On", "Off"}},
         }) {
        CommandResult r = syntax_check(c.line + "\n");
        EXPECT_NE(r.exit_code, 0) << "accepted: " << c.line;
        const auto tail = r.output.substr(r.output.find('\n') + 1);  // not the file name
        EXPECT_NE(tail.find(c.directive), std::string::npos) << r.output;
        for (const auto& w : c.words)
            EXPECT_NE(tail.find(w), std::string::npos) << c.line << ": " << r.output;
    }
}

// A child has one lifecycle whatever virtual host a request belongs to.
TEST(LifecycleConfig, ProcessWideDirectivesAreRefusedInAVirtualHost) {
    for (const std::string d :
         {"AbortGuardGracePeriod 1s", "AbortGuardGraceAction log", "AbortGuardExitTimeout 1s"}) {
        CommandResult r = syntax_check("<VirtualHost 127.0.0.1:1>\n  " + d + "\n</VirtualHost>\n");
        EXPECT_NE(r.exit_code, 0) << "accepted in a virtual host: " << d;
        EXPECT_NE(r.output.find("VirtualHost"), std::string::npos) << r.output;
    }
}

INSTANTIATE_TEST_SUITE_P(Mpm, LifecycleTest, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
