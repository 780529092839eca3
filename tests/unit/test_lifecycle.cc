// Lifecycle: the stop notice, the grace period and the exit bound, on a real
// monitor thread, with the process exit replaced by a recorder.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"
#include "lifecycle.h"
#include "log.h"
#include "monitor.h"
#include "request_state.h"
#include "sockets.h"

using abortguard::Lifecycle;
using abortguard::LockMode;
using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::RequestState;
using abortguard::Token;
using abortguard::CleanupWhen;

namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kWait = 5000 * kMs;  // bound of every wait for an event

// The core's log lines, awaitable.
class LogCapture {
  public:
    static LogCapture& get() {
        static LogCapture c;
        return c;
    }
    static void sink(abortguard::log::Level, const char* message, void*) {
        LogCapture& c = get();
        std::lock_guard<std::mutex> lock(c.mu_);
        c.lines_.push_back(message);
        c.cv_.notify_all();
    }
    void clear() {
        std::lock_guard<std::mutex> lock(mu_);
        lines_.clear();
    }
    // Waits (bounded) for a line containing every part; returns it or "".
    std::string await(const std::vector<std::string>& parts, int64_t timeout_ns = kWait) {
        std::unique_lock<std::mutex> lock(mu_);
        std::string found;
        cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
                     [&] { return !(found = find(parts)).empty(); });
        return found;
    }
    int count(const std::vector<std::string>& parts) {
        std::lock_guard<std::mutex> lock(mu_);
        int n = 0;
        for (const auto& l : lines_) {
            bool all = true;
            for (const auto& p : parts)
                all = all && l.find(p) != std::string::npos;
            n += all ? 1 : 0;
        }
        return n;
    }

  private:
    std::string find(const std::vector<std::string>& parts) const {
        for (const auto& l : lines_) {
            bool all = true;
            for (const auto& p : parts)
                all = all && l.find(p) != std::string::npos;
            if (all)
                return l;
        }
        return "";
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> lines_;
};

// The replaced process exit: counts and wakes the test.
std::atomic<int> g_exits{0};
Token* g_exited = nullptr;
std::atomic<int64_t> g_exited_at{0};
void record_exit(int) {
    g_exits.fetch_add(1);
    g_exited_at = mono_ns();
    g_exited->abort(Reason::kError, mono_ns());
}

struct TempFile {
    std::string path;
    TempFile() {
        char tmpl[] = "/tmp/ag-life-XXXXXX";
        const int fd = mkstemp(tmpl);
        close(fd);
        path = tmpl;
    }
    ~TempFile() { unlink(path.c_str()); }
};

bool lock_is_free(const std::string& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    const bool free = fcntl(fd, F_OFD_SETLK, &fl) == 0;
    close(fd);
    return free;
}

class LifecycleTest : public ::testing::Test {
  protected:
    void SetUp() override {
        abortguard::log::set_sink(LogCapture::sink, nullptr, abortguard::log::Level::kDebug);
        LogCapture::get().clear();
        g_exits = 0;
        exited_ = std::make_unique<Token>();
        g_exited = exited_.get();
        ASSERT_TRUE(Monitor::create(&monitor_).is_ok());
    }

    void start(Lifecycle::Config config) {
        config.kill_backstop = false;  // never SIGKILL the test binary
        ASSERT_TRUE(Lifecycle::create(monitor_.get(), config, &life_).is_ok());
        life_->set_exit_fn(record_exit);
    }

    void TearDown() override {
        life_.reset();
        monitor_.reset();
        abortguard::log::set_sink(nullptr, nullptr, abortguard::log::Level::kError);
    }

    bool await_exit() { return exited_->wait_until(mono_ns() + kWait); }

    std::unique_ptr<Monitor> monitor_;
    std::unique_ptr<Lifecycle> life_;
    std::unique_ptr<Token> exited_;
};

Lifecycle::Config quiet() {
    Lifecycle::Config c;
    c.grace_ns = 0;
    c.exit_timeout_ns = 0;
    c.terminate_interval_ns = 0;  // no rate bound unless a test asks
    return c;
}

TEST_F(LifecycleTest, StopNoticeReachesRequestsInFlightAndThoseThatBeginLater) {
    start(quiet());
    RequestState before("/before", "h", 0, 0, life_.get());
    RequestState done("/done", "h", 0, 0, life_.get());
    done.set_response_done();
    life_->notify_stop(true);
    EXPECT_EQ(before.token().wait_event(mono_ns() + kWait), Token::Wake::kStopped);
    EXPECT_FALSE(before.token().aborted());
    RequestState later("/later", "h", 0, 0, life_.get());
    EXPECT_TRUE(later.token().stopping()) << "a request that begins in a stopping child";
    ASSERT_NE(LogCapture::get().await({"AG0610", "graceful"}), "");
    EXPECT_FALSE(done.token().stopping()) << "its response was complete already";
}

TEST_F(LifecycleTest, OnlyAStateCreatedWithTheLifecycleAsObserverHearsOfIt) {
    start(quiet());
    life_->notify_stop(true);
    ASSERT_NE(LogCapture::get().await({"AG0615", "graceful"}), "") << "the stop was processed";
    RequestState observed("/observed", "h", 0, 0, life_.get());
    RequestState unobserved("/unobserved", "h");
    EXPECT_TRUE(observed.token().stopping());
    EXPECT_FALSE(unobserved.token().stopping()) << "nothing global ties a state to a lifecycle";
}

TEST_F(LifecycleTest, StopAbortsMakesTheNoticeAnAbortWithReasonServerStop) {
    start(quiet());
    RequestState s("/poll", "h", RequestState::kStopAborts, 0, life_.get());
    life_->notify_stop(true);
    EXPECT_EQ(s.token().wait_event(mono_ns() + kWait), Token::Wake::kAborted);
    EXPECT_EQ(s.token().reason(), Reason::kServerStop);
    ASSERT_NE(LogCapture::get().await({"AG0610"}), "");  // the delivery is over
    EXPECT_TRUE(s.token().stopping());
}

TEST_F(LifecycleTest, StopNoticeShutsDownIdleConnectionsOnly) {
    Lifecycle::Config c = quiet();
    c.conn_capacity = 4;
    start(c);
    agtest::Listener l;
    auto [c1, idle] = l.connect_pair();
    auto [c2, busy] = l.connect_pair();
    const int idle_slot = life_->conns()->add(idle.get());
    const int busy_slot = life_->conns()->add(busy.get());
    life_->conns()->set_idle(idle_slot);
    std::atomic<bool> reading{false};
    ssize_t got = -1;
    std::thread reader([&] {
        char buf[8];
        reading = true;
        got = recv(idle.get(), buf, sizeof buf, 0);
    });
    while (!reading)
        std::this_thread::yield();
    life_->notify_stop(true);
    reader.join();
    EXPECT_EQ(got, 0) << "the keep-alive wait ends";
    char ch;
    EXPECT_EQ(recv(busy.get(), &ch, 1, MSG_DONTWAIT), -1) << "the busy connection is untouched";
    EXPECT_NE(LogCapture::get().await({"AG0610", "1 idle keep-alive connection(s) closed"}), "");
    life_->conns()->remove(idle_slot);
    life_->conns()->remove(busy_slot);
}

TEST_F(LifecycleTest, GracePeriodLogsAnAbortedRequestOnceAndNoOther) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 50 * kMs;
    start(c);
    TempFile f;
    RequestState running("/running", "h", 0, 0, life_.get());
    RequestState hung("/hung", "slow-handler", 0, 0, life_.get());
    RequestState::LockRef lock;
    ASSERT_TRUE(hung.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
    const int64_t aborted = mono_ns();
    hung.token().abort(Reason::kRst, aborted);
    const std::string line = LogCapture::get().await({"AG0601", "/hung"});
    ASSERT_NE(line, "");
    EXPECT_GE(mono_ns() - aborted, 50 * kMs);
    EXPECT_NE(line.find("slow-handler"), std::string::npos) << line;
    EXPECT_NE(line.find("(rst)"), std::string::npos) << line;
    EXPECT_NE(line.find("1 lock(s) held: " + f.path + " (ex"), std::string::npos) << line;
    EXPECT_FALSE(lock_is_free(f.path)) << "log only";
    EXPECT_EQ(g_exits.load(), 0);
    // A later aborted request's warning comes after: still one for /hung,
    // none for the request that was never aborted.
    RequestState other("/other", "h", 0, 0, life_.get());
    other.token().abort(Reason::kFin, mono_ns());
    ASSERT_NE(LogCapture::get().await({"AG0601", "/other"}), "");
    EXPECT_EQ(LogCapture::get().count({"AG0601", "/hung"}), 1);
    EXPECT_EQ(LogCapture::get().count({"AG0601", "/running"}), 0);
}

TEST_F(LifecycleTest, TheGraceTimerEndsWithTheRequest) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 30 * kMs;
    start(c);
    {
        RequestState ended("/ended", "h", 0, 0, life_.get());
        ended.token().abort(Reason::kRst, mono_ns());
    }  // ended in time: its timer is cancelled
    // Timers fire in deadline order: this later one proves the earlier
    // one's deadline has passed.
    RequestState later("/later", "h", 0, 0, life_.get());
    later.token().abort(Reason::kRst, mono_ns());
    ASSERT_NE(LogCapture::get().await({"AG0601", "/later"}), "");
    EXPECT_EQ(LogCapture::get().count({"AG0601", "/ended"}), 0);
}

struct CleanupSeen {
    std::atomic<int> runs{0};
    std::atomic<bool> in_terminate{false};
    std::atomic<bool> on_other_thread{false};
    std::thread::id request_thread;
};

TEST_F(LifecycleTest, TerminateRunsTheAbortCleanupsReleasesTheLocksAndEndsTheProcess) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 30 * kMs;
    c.grace_terminate = true;
    start(c);
    TempFile f;
    CleanupSeen seen;
    seen.request_thread = std::this_thread::get_id();
    {
        RequestState hung("/hung", "h", 0, 0, life_.get());
        RequestState::LockRef lock;
        ASSERT_TRUE(
            hung.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
        hung.add_cleanup(
            [&](bool aborted) {
                if (aborted)
                    seen.runs.fetch_add(1);
                seen.in_terminate = Lifecycle::in_terminate();
                seen.on_other_thread = std::this_thread::get_id() != seen.request_thread;
            },
            CleanupWhen::kOnAbort, nullptr);
        hung.add_cleanup([&](bool) { seen.runs.fetch_add(100); }, CleanupWhen::kOnSuccess, nullptr);
        hung.token().abort(Reason::kRst, mono_ns());
        ASSERT_TRUE(await_exit());
        EXPECT_EQ(seen.runs.load(), 1);
        EXPECT_TRUE(seen.in_terminate.load());
        EXPECT_TRUE(seen.on_other_thread.load());
        EXPECT_TRUE(lock_is_free(f.path));
        EXPECT_EQ(hung.held_locks(), 0);
        EXPECT_FALSE(Lifecycle::in_terminate());
        // The request thread comes back after all: nothing runs twice.
        hung.run_cleanups(true, 0);
    }
    EXPECT_EQ(seen.runs.load(), 1);
    EXPECT_EQ(g_exits.load(), 1);
    EXPECT_NE(LogCapture::get().await({"AG0603", "released 1 lock(s)"}), "");
}

// Release, drain, then exit: another request in flight finishes first.
TEST_F(LifecycleTest, TerminateLetsTheOtherRequestsFinishBeforeTheProcessEnds) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 30 * kMs;
    c.grace_terminate = true;
    c.exit_timeout_ns = 5000 * kMs;
    std::atomic<int> drains{0};
    c.on_drain = [](void* arg) { static_cast<std::atomic<int>*>(arg)->fetch_add(1); };
    c.drain_arg = &drains;
    start(c);
    TempFile f;
    auto other = std::make_unique<RequestState>("/long-poll", "h", 0, 0, life_.get());
    RequestState hung("/hung", "h", 0, 0, life_.get());
    RequestState::LockRef lock;
    ASSERT_TRUE(hung.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
    hung.token().abort(Reason::kFin, mono_ns());
    ASSERT_NE(LogCapture::get().await({"AG0607", "1 other request(s)"}), "");
    EXPECT_TRUE(lock_is_free(f.path)) << "released at once, before the drain";
    EXPECT_TRUE(life_->draining());
    EXPECT_EQ(drains.load(), 1);
    EXPECT_FALSE(exited_->wait_until(mono_ns() + 100 * kMs)) << "exited before the drain";
    const int64_t finished = mono_ns();
    other.reset();  // the long-poll answers and ends
    ASSERT_TRUE(await_exit());
    EXPECT_GE(g_exited_at.load(), finished);
    EXPECT_NE(LogCapture::get().await({"AG0608", "drained"}), "");
    EXPECT_EQ(g_exits.load(), 1);
}

TEST_F(LifecycleTest, RequestsThatOutliveTheDrainAreNamedAndTheirAbortCleanupsRun) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 30 * kMs;
    c.grace_terminate = true;
    c.exit_timeout_ns = 200 * kMs;
    start(c);
    std::atomic<int> rolled_back{0};
    RequestState stuck("/stuck-upload", "uploader", 0, 0, life_.get());
    stuck.add_cleanup([&](bool aborted) { rolled_back += aborted ? 1 : 100; }, CleanupWhen::kOnAbort,
                      nullptr);
    RequestState hung("/hung", "h", 0, 0, life_.get());
    const int64_t aborted = mono_ns();
    hung.token().abort(Reason::kRst, aborted);
    ASSERT_TRUE(await_exit());
    EXPECT_GE(g_exited_at.load() - aborted, 230 * kMs) << "grace + the drain's bound";
    const std::string named = LogCapture::get().await({"AG0609", "/stuck-upload"});
    EXPECT_NE(named.find("uploader"), std::string::npos) << named;
    EXPECT_NE(LogCapture::get().await({"AG0612", "1 request(s) cut"}), "");
    EXPECT_EQ(rolled_back.load(), 1);
}

TEST_F(LifecycleTest, TerminateIsRefusedInAYoungChildAndByTheServerWideBound) {
    for (const bool young : {true, false}) {
        SCOPED_TRACE(young ? "the child's own bound" : "the server-wide bound");
        LogCapture::get().clear();
        life_.reset();
        Lifecycle::Config c = quiet();
        c.grace_ns = 20 * kMs;
        c.grace_terminate = true;
        c.terminate_interval_ns = young ? 60000 * kMs : 0;
        c.permit = [](void*, int64_t, int64_t) { return false; };
        start(c);
        RequestState hung("/hung", "h", 0, 0, life_.get());
        hung.token().abort(Reason::kFin, mono_ns());
        ASSERT_NE(LogCapture::get().await({"AG0605"}), "");
        EXPECT_FALSE(life_->draining());
        EXPECT_EQ(LogCapture::get().count({"AG0602"}), 0);
        EXPECT_FALSE(exited_->wait_until(mono_ns() + 50 * kMs));
    }
}

// F4: a handler that returned promptly, whose rollback outlasts the rest of
// the grace period, is not hung: the grace action must not cut it.
TEST_F(LifecycleTest, ACleanupThatOutlastsTheGracePeriodIsNotCutByIt) {
    Lifecycle::Config c = quiet();
    c.grace_ns = 50 * kMs;
    c.grace_terminate = true;
    start(c);
    TempFile f;
    std::atomic<bool> held_throughout{true};
    {
        RequestState s("/rollback", "h", 0, 0, life_.get());
        RequestState::LockRef lock;
        ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
        s.add_cleanup(
            [&](bool) {
                for (int i = 0; i < 15; ++i) {  // 150 ms, three grace periods
                    usleep(10 * 1000);
                    held_throughout = held_throughout && !lock_is_free(f.path);
                }
            },
            CleanupWhen::kOnAbort, nullptr);
        s.token().abort(Reason::kFin, mono_ns());
        s.run_cleanups(true, 0);  // the handler returned: its cleanups run
    }
    EXPECT_TRUE(held_throughout.load()) << "the lock was released under the rollback";
    EXPECT_EQ(LogCapture::get().count({"AG0601"}), 0);
    EXPECT_EQ(g_exits.load(), 0);
}

TEST_F(LifecycleTest, AnExitThatTakesLongerThanTheBoundEndsTheProcess) {
    Lifecycle::Config c = quiet();
    c.exit_timeout_ns = 100 * kMs;
    start(c);
    RequestState stuck("/stuck", "h", 0, 0, life_.get());
    const int64_t began = mono_ns();
    life_->notify_exit();
    ASSERT_TRUE(await_exit());
    EXPECT_GE(g_exited_at.load() - began, 100 * kMs);
    const std::string line = LogCapture::get().await({"AG0620"});
    EXPECT_NE(line.find("its exit began"), std::string::npos) << line;
    EXPECT_NE(line.find("/stuck (handler h): handler running"), std::string::npos) << line;
    EXPECT_NE(line.find("other modules' child pool cleanups"), std::string::npos) << line;
}

TEST_F(LifecycleTest, ACleanupThatHangsInAStoppingChildEndsTheProcess) {
    Lifecycle::Config c = quiet();
    c.exit_timeout_ns = 100 * kMs;
    start(c);
    Token release;
    RequestState s("/cleaning", "h", 0, 0, life_.get());
    s.add_cleanup([&](bool) { release.wait_until(mono_ns() + kWait); }, CleanupWhen::kAlways,
                  reinterpret_cast<const void*>(&lock_is_free));
    std::thread request([&] { s.run_cleanups(false, 0); });
    const int64_t stopped = mono_ns();
    life_->notify_stop(true);
    ASSERT_TRUE(await_exit());
    EXPECT_GE(g_exited_at.load() - stopped, 100 * kMs);
    const std::string line = LogCapture::get().await({"AG0620", "the cleanups of /cleaning"});
    EXPECT_NE(line, "");
    EXPECT_NE(line.find("(handler h): cleanup "), std::string::npos)
        << "names the cleanup: " << line;
    release.abort(Reason::kError, mono_ns());
    request.join();
}

// From a real signal handler, as prefork delivers the graceful signal.
Lifecycle* g_signal_life = nullptr;
void on_signal(int) {
    g_signal_life->notify_stop(true);
}

TEST_F(LifecycleTest, TheStopNoticeCanComeFromASignalHandler) {
    start(quiet());
    RequestState s("/poll", "h", 0, 0, life_.get());
    g_signal_life = life_.get();
    struct sigaction sa = {}, old = {};
    sa.sa_handler = on_signal;
    sigaction(SIGUSR2, &sa, &old);
    raise(SIGUSR2);
    sigaction(SIGUSR2, &old, nullptr);
    EXPECT_EQ(s.token().wait_event(mono_ns() + kWait), Token::Wake::kStopped);
}

TEST(MonitorPost, BitsPostedTogetherReachTheHandlerOnTheMonitorThread) {
    std::unique_ptr<Monitor> m;
    ASSERT_TRUE(Monitor::create(&m).is_ok());
    struct Seen {
        std::mutex mu;
        uint32_t bits = 0;
        bool on_monitor = false;
        Token got;
        Monitor* m;
    } seen;
    seen.m = m.get();
    m->post(1);  // before a handler: kept for it
    m->post(4);
    m->set_post_handler(
        [](void* arg, uint32_t bits) {
            auto* s = static_cast<Seen*>(arg);
            std::lock_guard<std::mutex> lock(s->mu);
            s->bits |= bits;
            s->on_monitor = s->m->on_monitor_thread();
            if (s->bits == 5)
                s->got.abort(Reason::kError, mono_ns());
        },
        &seen);
    ASSERT_TRUE(seen.got.wait_until(mono_ns() + kWait));
    m->set_post_handler(nullptr, nullptr);  // waits out a call in progress
    {
        std::lock_guard<std::mutex> lock(seen.mu);
        EXPECT_EQ(seen.bits, 5u);
        EXPECT_TRUE(seen.on_monitor);
    }
    m.reset();
}

TEST(MonitorRetire, RefusesNewWatchesButKeepsRunningTimers) {
    Token t;  // outlives the monitor, whose timer aborts it
    std::unique_ptr<Monitor> m;
    ASSERT_TRUE(Monitor::create(&m).is_ok());
    m->retire();
    agtest::Listener l;
    auto [client, server] = l.connect_pair();
    Monitor::WatchId id = 0;
    EXPECT_FALSE(m->watch(server.get(), 0, &t, nullptr, nullptr, &id).is_ok());
    Monitor::TimerId timer = 0;
    ASSERT_TRUE(m->add_timer(
                     mono_ns() + kMs,
                     [](void* arg) { static_cast<Token*>(arg)->abort(Reason::kError, mono_ns()); },
                     &t, &timer)
                    .is_ok());
    EXPECT_TRUE(t.wait_until(mono_ns() + kWait));
}

}  // namespace
