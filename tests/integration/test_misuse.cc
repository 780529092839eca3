// The API's misuse contract (README, "Calling at the wrong time"): every
// function called after the request ended, from a monitor thread, on a
// subrequest, with NULL or extreme arguments has its documented outcome,
// and none of it strands a watch, leaks a lock or grows without bound.
// The test-only module mod_abortguard_misuse does the misuse and logs what
// each call returned (AGM0001 lines). The server has no global AbortGuard
// directive, so a first API call is what starts monitoring (the case where
// a late first call used to leave a ghost).
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "json.h"

#ifndef AG_CXXTEST_SO
#error "AG_CXXTEST_SO must be defined (the built mod_abortguard_cxxtest.so)"
#endif
#ifndef AG_MISUSE_SO
#error "AG_MISUSE_SO must be defined (the built mod_abortguard_misuse.so)"
#endif

namespace agtest {
namespace {

constexpr Millis kIo(10000);
constexpr Millis kLogWait(15000);

HttpdOptions misuse_options(const std::string& mpm) {
    HttpdOptions o;
    o.name = "misuse-" + mpm;
    o.mpm = mpm;
    o.abortguard_on = false;  // monitoring starts with the first API call
    o.extra_config = "LoadModule abortguard_misuse_module " AG_MISUSE_SO
                     "\n"
                     "LoadModule abortguard_cxxtest_module " AG_CXXTEST_SO
                     "\n"
                     "<Location /misuse>\n  SetHandler abortguard-misuse\n</Location>\n"
                     "<Location /cxx>\n  SetHandler abortguard-cxxtest\n</Location>\n"
                     "<Location /watched>\n  SetHandler abortguard-test\n  AbortGuard On\n"
                     "</Location>\n"
                     "<Location /agstatus>\n  SetHandler abortguard-status\n</Location>\n";
    // One child under prefork would serialise the fd-reuse test; keep the
    // default pool but make sure the lock directory exists for every child.
    o.files["locks/.keep"] = "";
    return o;
}

HttpdPool& misuse_pool() {
    static HttpdPool pool([](const std::string& mpm) { return misuse_options(mpm); });
    return pool;
}

// key=value pairs of one AGM0001 line.
using Fields = std::map<std::string, std::string>;

Fields fields_of(const std::string& line, size_t from) {
    Fields out;
    std::istringstream in(line.substr(from));
    for (std::string word; in >> word;) {
        const size_t eq = word.find('=');
        if (eq != std::string::npos)
            out[word.substr(0, eq)] = word.substr(eq + 1);
    }
    return out;
}

class Misuse : public HttpdTest {
  protected:
    HttpdPool& pool() override { return misuse_pool(); }
    static void TearDownTestSuite() { misuse_pool().stop_all(); }

    void SetUp() override {
        HttpdTest::SetUp();
        if (HasFatalFailure())
            return;
        lock_dir_ = httpd().run_dir() + "/locks";
        ::chmod(lock_dir_.c_str(), 0777);  // httpd's children write here as www-data
    }

    // The AGM0001 (C) or AGC0001 (C++) line of `tag` and case `name`.
    Fields result(const std::string& tag, const std::string& name) {
        const std::regex re("AG[MC]0001: " + tag + " " + name + " ");
        Deadline deadline(kLogWait);
        for (;;) {
            for (const auto& line : errors().new_lines()) {
                std::smatch m;
                if (std::regex_search(line, m, re))
                    return fields_of(line, m.position(0) + m.length(0));
            }
            if (deadline.expired()) {
                ADD_FAILURE() << "no AGM0001 line for " << tag << " " << name;
                return {};
            }
            std::this_thread::sleep_for(Millis(10));
        }
    }

    // A request on a connection of its own, read to the end.
    HttpResponse get(const std::string& target) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(target, "Connection: close\r\n")));
        auto r = c.read_response(kIo);
        EXPECT_TRUE(r) << target;
        return r.value_or(HttpResponse{});
    }

    std::string url(const std::string& name, const std::string& tag) {
        return "/misuse?case=" + name + "&dir=" + lock_dir_ + "&t=" + tag;
    }

    // The in-flight requests of the child that answers.
    size_t inflight() {
        auto r = get("/agstatus?json");
        auto j = Json::parse(r.body);
        EXPECT_TRUE(j) << r.body;
        return j ? (*j)["inflight"]["requests"].items().size() : 0;
    }

    std::string lock_dir_;
};

TEST_P(Misuse, CallsAfterTheRequestEndedReportItAndNeverBlock) {
    for (const std::string name : {"late", "latepre", "lateused"}) {
        SCOPED_TRACE(name);
        const std::string tag = make_tag();
        EXPECT_EQ(get(url(name, tag)).status, 200);
        Fields f = result(tag, name);
        EXPECT_EQ(f["aborted"], "0");
        EXPECT_EQ(f["reason"], "-");
        EXPECT_EQ(f["at"], "0");
        EXPECT_EQ(f["stopping"], "0");
        EXPECT_EQ(f["wait"], "EGENERAL") << "a wait after the end returns at once";
        EXPECT_LT(std::stoi(f["slept_ms"]), 100);
        EXPECT_EQ(f["probe"], "0");
        EXPECT_EQ(f["cleanup"], "EGENERAL");
        EXPECT_EQ(f["on_abort"], "EGENERAL");
        EXPECT_EQ(f["lock"], "EGENERAL");
        EXPECT_EQ(f["lock_null"], "1");
    }
}

// The stranded-slot bug: a late first call created a watch whose end never
// ran, so the next connection that got the same fd number could not be
// watched (AG0202) and its abort went unnoticed.
TEST_P(Misuse, LateFirstCallsLeaveNoGhostAndEveryLaterAbortIsSeen) {
    for (int i = 0; i < 30; ++i)
        EXPECT_EQ(get(url("late", make_tag())).status, 200);
    std::vector<std::string> tags;
    for (int i = 0; i < 40; ++i) {
        RawClient c = connect();
        const std::string tag = make_tag();
        tags.push_back(tag);
        ASSERT_TRUE(c.send(http_get("/watched?ms=5000&flush=1&t=" + tag)));
        ASSERT_TRUE(c.read_until("started\n", kIo));
        c.close_fin();
    }
    for (const auto& tag : tags) {
        AccessLine line = await(tag);
        EXPECT_EQ(line.aborted, "1") << line.raw;
        EXPECT_LT(line.duration_us, 2000000) << line.raw;
    }
    for (const auto& line : errors().new_lines())
        EXPECT_EQ(line.find("AG0202"), std::string::npos) << line;
    // Nothing of those requests is left in the in-flight table (the
    // status request itself is not monitored: no AbortGuard there).
    Deadline deadline(Millis(5000));
    size_t n = inflight();
    while (n != 0 && !deadline.expired()) {
        std::this_thread::sleep_for(Millis(20));
        n = inflight();
    }
    EXPECT_EQ(n, 0u);
}

TEST_P(Misuse, NullAndOutOfRangeArgumentsAreRefusedClearly) {
    const std::string tag = make_tag();
    EXPECT_EQ(get(url("args", tag)).status, 200);
    Fields f = result(tag, "args");
    for (const char* k :
         {"null_aborted", "null_reason", "null_at", "null_stopping", "null_probe", "unknown_probe"})
        EXPECT_EQ(f[k], "0") << k;
    for (const char* k :
         {"null_wait", "null_cleanup", "null_fn", "bad_when", "null_on_abort", "null_abort_fn",
          "null_lock_r", "null_path", "null_out", "bad_flags", "null_unlock"})
        EXPECT_EQ(f[k], "EINVAL") << k;
    EXPECT_EQ(f["wait0"], "TIMEUP");
    EXPECT_EQ(f["wait_neg"], "TIMEUP");
    EXPECT_EQ(f["wait_min"], "TIMEUP");
    EXPECT_EQ(f["quick"], "1") << "zero and negative timeouts do not sleep";
}

// APR_INT64_MAX used to overflow into a deadline in the past: the wait
// returned APR_TIMEUP at once and a "wait until abort" loop spun.
TEST_P(Misuse, AWaitWithTheLargestTimeoutEndsWhenTheClientLeaves) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get(url("forever", tag))));
    ASSERT_TRUE(c.read_until("waiting\n", kIo));
    std::this_thread::sleep_for(Millis(200));  // the client's think time, not a sync
    c.close_fin();
    Fields f = result(tag, "forever");
    EXPECT_EQ(f["wait"], "ECONNABORTED");
    EXPECT_GE(std::stoi(f["slept_ms"]), 150);
    EXPECT_LT(std::stoi(f["slept_ms"]), 3000);
}

TEST_P(Misuse, AnAbortCallbackMayCallTheApiButNothingBlocksOnTheMonitorThread) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get(url("monitor", tag))));
    ASSERT_TRUE(c.read_until("waiting\n", kIo));
    c.close_fin();
    Fields f = result(tag, "monitor");
    EXPECT_EQ(f["wait"], "ECONNABORTED");
    EXPECT_LT(std::stoi(f["slept_ms"]), 100);
    EXPECT_EQ(f["aborted"], "1");
    EXPECT_EQ(f["reason"], "1");
    EXPECT_EQ(f["at"], "1");
    EXPECT_EQ(f["cleanup"], "SUCCESS");
    EXPECT_EQ(f["on_abort"], "SUCCESS");
    EXPECT_EQ(f["nested"], "1") << "registered after the abort: runs at once";
    EXPECT_EQ(f["lock"], "EGENERAL") << "a lock could block the monitor thread";
}

TEST_P(Misuse, ARequestCannotGrowWithoutBound) {
    const std::string tag = make_tag();
    EXPECT_EQ(get(url("bounds", tag)).status, 200);
    Fields f = result(tag, "bounds");
    EXPECT_EQ(f["cleanups"], "1024");
    EXPECT_EQ(f["callbacks"], "1024");
    EXPECT_EQ(f["locks"], "64");
    EXPECT_EQ(f["last"], "ENOSPC");
    size_t warned = 0;
    for (const auto& line : errors().new_lines())
        warned += line.find("AG0132") != std::string::npos;
    EXPECT_EQ(warned, 3u) << "one line per bound";
    errors().expect("AG0132");
    // The 64 locks were released when the request ended -- after the client
    // had its response, so the next request (maybe in another child) waits
    // for that end before it tries.
    result(tag, "ended");
    const std::string again = make_tag();
    EXPECT_EQ(get(url("bounds", again)).status, 200);
    EXPECT_EQ(result(again, "bounds")["locks"], "64");
}

TEST_P(Misuse, UnlockingAfterTheEndIsHarmlessAndTheLockWasReleased) {
    const std::string tag = make_tag();
    EXPECT_EQ(get(url("lockafter", tag)).status, 200);
    EXPECT_EQ(result(tag, "lockafter")["unlock"], "SUCCESS");
    const std::string again = make_tag();
    EXPECT_EQ(get(url("lockafter", again)).status, 200) << "the lock of the first was freed";
    EXPECT_EQ(result(again, "lockafter")["unlock"], "SUCCESS");
}

TEST_P(Misuse, ACleanupRegisteredOnASubrequestRunsForItsMainRequest) {
    const std::string tag = make_tag();
    EXPECT_EQ(get(url("subreq", tag)).status, 200);
    EXPECT_EQ(result(tag, "subreq-registered")["cleanup"], "SUCCESS");
    Fields f = result(tag, "subreq");
    EXPECT_EQ(f["cleanup_ran"], "1");
    EXPECT_EQ(f["main"], "1") << "the cleanup gets the main request";
    EXPECT_EQ(f["aborted"], "0");
}

// README's pattern: a FileLockGuard in a shared_ptr that a cleanup captures.
// The guard outlives the request's end (its holder goes with the pool); its
// unlock then used freed memory.
TEST_P(Misuse, AGuardMovedIntoACleanupIsHeldThereAndHarmlessAfterwards) {
    for (int i = 0; i < 2; ++i) {  // the second gets the lock: the first let go
        const std::string tag = make_tag();
        EXPECT_EQ(get("/cxx?case=guardcleanup&lock=" + lock_dir_ + "/guard.lock&t=" + tag).status,
                  200);
        Fields f = result(tag, "guardcleanup");
        EXPECT_EQ(f["held"], "1") << "the cleanup runs before the lock is released";
        EXPECT_EQ(f["aborted"], "0");
    }
}

// As mod_include does with <!--#include virtual --> of a C++ handler: the
// cleanup's holder was allocated in the subrequest's pool, gone long before
// the main request's end ran it.
TEST_P(Misuse, ACxxCleanupRegisteredOnASubrequestOutlivesIt) {
    const std::string tag = make_tag();
    EXPECT_EQ(get("/cxx?case=sub&t=" + tag).status, 200);
    Fields f = result(tag, "sub");
    EXPECT_EQ(f["marker"], "kept-" + tag);
    EXPECT_EQ(f["aborted"], "0");
}

TEST_P(Misuse, ACxxCleanupMayTakeTheOutcome) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/cxx?case=outcome&t=" + tag)));
    ASSERT_TRUE(c.read_until("waiting\n", kIo));
    c.close_fin();
    EXPECT_EQ(result(tag, "outcome")["value"], "1");  // Outcome::kAborted
}

TEST_P(Misuse, ACxxWaitForTheMaximumDurationEndsWhenTheClientLeaves) {
    const std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/cxx?case=maxwait&t=" + tag)));
    ASSERT_TRUE(c.read_until("waiting\n", kIo));
    std::this_thread::sleep_for(Millis(200));  // the client's think time, not a sync
    c.close_fin();
    Fields f = result(tag, "maxwait");
    EXPECT_EQ(f["aborted"], "1");
    EXPECT_GE(std::stoi(f["slept_ms"]), 150);
}

// A MutexGuard's backstop runs on whichever thread ends the request; a
// mutex may only be unlocked by the thread that locked it (undefined for
// std::mutex, EPERM for an error-checking or robust one, which then stays
// held). The backstop leaves such a mutex alone and says so at error.
TEST_P(Misuse, AMutexGuardLeftToAnotherThreadIsNotUnlockedThereAndIsNamed) {
    errors().expect("AG0412: ");
    const std::string tag = make_tag();
    EXPECT_EQ(get("/cxx?case=mutexthread&t=" + tag).status, 200);
    Fields f = result(tag, "mutexthread");
    EXPECT_EQ(f["unlock_error"], "0") << "the backstop unlocked on a thread that does not hold it";
    EXPECT_EQ(f["locked"], "1");
    size_t named = 0;
    for (const auto& line : errors().new_lines())
        named += line.find("AG0412: a MutexGuard outlived its handler") != std::string::npos;
    EXPECT_EQ(named, 1u);
}

INSTANTIATE_TEST_SUITE_P(Mpm, Misuse, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
