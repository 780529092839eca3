// Handler API: the example modules (examples/), built against the public
// headers only, use mod_abortguard's optional functions and abortguard.hpp.
// The server has NO AbortGuard directive (so monitoring starts on demand,
// because the handlers call the API), plus one location with an explicit
// "AbortGuard Off" for contrast.
//
// The examples log their transaction's outcome at notice, from cleanups that
// run at the end of the request:
//   AGX0001: transaction <id> rolled back    AGX0002: ... committed    (C)
//   AGX0011: transaction <id> rolled back|committed                   (C++)
// and the C example logs AGX0004: transaction <id> begun, at info.
// Every scenario runs under the event, worker and prefork MPMs.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "procfs.h"

#ifndef AG_EXAMPLE_C_SO
#error "AG_EXAMPLE_C_SO must be defined (the built mod_abortguard_example_c.so)"
#endif
#ifndef AG_EXAMPLE_CXX_SO
#error "AG_EXAMPLE_CXX_SO must be defined (the built mod_abortguard_example_cxx.so)"
#endif

namespace agtest {
namespace {

// Loose bound: the handler asked for 5 s and must stop this soon after the
// client closed.
constexpr int64_t kMaxStopUs = 500000;
// In the mixed run an aborted request asked for 3 s; it stopped early if it
// took less than this (loose: many requests run side by side).
constexpr int64_t kStoppedEarlyUs = 2500000;
constexpr Millis kIo(10000);
constexpr Millis kLogWait(15000);
constexpr Millis kPoll(10);
constexpr int64_t kPollSlackUs = 50000;
// How long a client that closes "while the handler computes" first checks
// that no byte arrives.
constexpr Millis kQuiet(250);

HttpdOptions api_options(const std::string& name, const std::string& mpm) {
    HttpdOptions o;
    o.name = name;
    o.mpm = mpm;
    o.abortguard_on = false;  // no AbortGuard directive at all
    o.extra_config = "LoadModule abortguard_example_c_module " AG_EXAMPLE_C_SO
                     "\n"
                     "LoadModule abortguard_example_cxx_module " AG_EXAMPLE_CXX_SO
                     "\n"
                     "<Location /example-c>\n"
                     "  SetHandler abortguard-example-c\n"
                     "</Location>\n"
                     "<Location /example-cxx>\n"
                     "  SetHandler abortguard-example-cxx\n"
                     "</Location>\n"
                     "<Location /example-c-off>\n"
                     "  SetHandler abortguard-example-c\n"
                     "  <IfModule abortguard_module>\n"
                     "    AbortGuard Off\n"
                     "  </IfModule>\n"
                     "</Location>\n";
    return o;
}

// Whether a line that `log` has seen since it started matches `pattern`,
// polling until the deadline.
bool await_log_line(const ErrorLogWatch& log, const std::string& pattern) {
    const std::regex re(pattern);
    Deadline deadline(kLogWait);
    for (;;) {
        for (const auto& line : log.new_lines()) {
            if (std::regex_search(line, re))
                return true;
        }
        if (deadline.expired())
            return false;
        std::this_thread::sleep_for(kPoll);
    }
}

HttpdPool& api_pool() {
    static HttpdPool pool([](const std::string& mpm) { return api_options("api-" + mpm, mpm); });
    return pool;
}

// Transaction outcomes logged since the test began, per id.
struct Outcomes {
    std::map<std::string, int> rolled_back;
    std::map<std::string, int> committed;
    int cleanup_runs = 0;  // AG0203 lines: a request's registry has run

    int rolled(const std::string& id) const {
        auto it = rolled_back.find(id);
        return it == rolled_back.end() ? 0 : it->second;
    }
    int commits(const std::string& id) const {
        auto it = committed.find(id);
        return it == committed.end() ? 0 : it->second;
    }
    int any(const std::string& id) const { return rolled(id) + commits(id); }
};

Outcomes outcomes_in(const std::vector<std::string>& lines) {
    static const std::regex tx(R"(AGX00(01|02|11): transaction (\S+) (rolled back|committed))");
    Outcomes o;
    for (const auto& line : lines) {
        std::smatch m;
        if (std::regex_search(line, m, tx)) {
            (m[3] == "committed" ? o.committed : o.rolled_back)[m[2]]++;
        } else if (line.find("AG0203: ran ") != std::string::npos) {
            o.cleanup_runs++;
        }
    }
    return o;
}

std::string fmt_us(int64_t us) {
    return std::to_string(us / 1000) + " ms";
}

class Api : public HttpdTest {
  protected:
    HttpdPool& pool() override { return api_pool(); }
    static void TearDownTestSuite() { api_pool().stop_all(); }

    Outcomes outcomes() { return outcomes_in(errors().new_lines()); }

    // Polls the error log until `done` holds (returns true) or the deadline.
    bool await_outcomes(const std::function<bool(const Outcomes&)>& done, Outcomes* out) {
        Deadline deadline(kLogWait);
        for (;;) {
            *out = outcomes();
            if (done(*out))
                return true;
            if (deadline.expired())
                return false;
            std::this_thread::sleep_for(kPoll);
        }
    }

    bool await_error_line(const std::string& pattern) { return await_log_line(errors(), pattern); }

    // The access log line of request `id`; `seen_us` (optional) receives
    // monotonic_us() when it was found: an upper bound of the request's end.
    AccessLine await_line(const std::string& id, int64_t* seen_us = nullptr) {
        auto line = access().wait_for("id=" + id + "&", kLogWait);
        if (seen_us)
            *seen_us = monotonic_us();
        EXPECT_TRUE(line) << "no access log line for " << id;
        return line.value_or(AccessLine{});
    }

    // The request was cut short by the client and noticed through the
    // on-demand monitoring: flagged, and over well before its 5 s. The
    // request ended before its line was seen; the line is polled for every
    // 10 ms, hence the slack.
    static void expect_stopped_quickly(const AccessLine& line, int64_t close_us, int64_t seen_us) {
        EXPECT_EQ(line.aborted, "1") << line.raw;
        EXPECT_LT(seen_us - close_us, kMaxStopUs + kPollSlackUs)
            << "the request ended " << fmt_us(seen_us - close_us)
            << " after the close or later: " << line.raw;
    }

    // Exactly one rollback for `id` and no commit, awaited (the cleanups run
    // after the access log line is written).
    void expect_rolled_back_once(const std::string& id) {
        Outcomes o;
        EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o))
            << "no transaction outcome logged for " << id;
        EXPECT_EQ(o.rolled(id), 1) << id;
        EXPECT_EQ(o.commits(id), 0) << id;
    }

    // Sends GET `target` and closes at once with a FIN or an RST.
    RawClient send_and_close(const std::string& target, bool rst) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(target)));
        rst ? c.close_rst() : c.close_fin();
        return c;
    }

    // The handler asked for 5 s; the client closes (FIN or RST) either at
    // once, typically before the handler even runs, or while the handler
    // computes: after kQuiet without a byte from the server (a check that
    // the handler is busy, not a synchronisation). Either way it stops
    // within the bound and its transaction is rolled back, once.
    void stops_on_close(const std::string& path, bool rst, const std::string& extra = "") {
        for (bool at_once : {true, false}) {
            SCOPED_TRACE(at_once ? "closed at once" : "closed while the handler computes");
            const std::string id = make_tag();
            const std::string target = path + "?id=" + id + "&ms=5000" + extra;
            RawClient c = connect();
            ASSERT_TRUE(c.send(http_get(target)));
            if (!at_once) {
                EXPECT_FALSE(c.read_at_least(1, kQuiet)) << c.received();
                ASSERT_FALSE(c.peer_closed());
            }
            rst ? c.close_rst() : c.close_fin();
            int64_t seen = 0;
            AccessLine line = await_line(id, &seen);
            expect_stopped_quickly(line, c.close_us(), seen);
            EXPECT_EQ(line.reason, rst ? "rst" : "fin") << line.raw;
            // %D counts (on the wall clock) from when httpd read the
            // request, which the client sent just before closing, or kQuiet
            // before: then the request was well under way at the close.
            const int64_t quiet_us = at_once ? 0 : kQuiet.count() * 1000;
            EXPECT_GE(line.duration_us, quiet_us / 2) << line.raw;
            EXPECT_LT(line.duration_us, quiet_us + kMaxStopUs) << line.raw;
            expect_rolled_back_once(id);
        }
    }
};

// ----------------------------------------------------------- 1. stop on close

TEST_P(Api, CExampleStopsOnFin) {
    stops_on_close("/example-c", false);
}

TEST_P(Api, CExampleStopsOnRst) {
    stops_on_close("/example-c", true);
}

TEST_P(Api, CxxExampleStopsOnFin) {
    stops_on_close("/example-cxx", false);
}

TEST_P(Api, CxxExampleStopsOnRst) {
    stops_on_close("/example-cxx", true);
}

// A completed request commits (and is not flagged): the counterpart of the
// above, so that a module that "rolls back" everything fails.
TEST_P(Api, CompletedRequestsCommit) {
    for (const std::string path : {"/example-c", "/example-cxx"}) {
        const std::string id = make_tag();
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get(path + "?id=" + id + "&ms=30")));
        auto response = c.read_response(kIo);
        ASSERT_TRUE(response) << c.received();
        EXPECT_EQ(response->status, 200);
        EXPECT_EQ(response->body, "transaction " + id + " done\n");
        c.close_fin();
        AccessLine line = await_line(id);
        EXPECT_EQ(line.aborted, "-") << line.raw;
        Outcomes o;
        EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o)) << id;
        EXPECT_EQ(o.commits(id), 1) << id;
        EXPECT_EQ(o.rolled(id), 0) << id;
    }
}

// The C++ guards (FileLockGuard, MutexGuard) used by a module written only
// against abortguard.hpp: A holds the file lock and its client resets; B,
// waiting for the same lock, gets it at once and commits (its commit takes
// the ledger's MutexGuard); A's transaction is rolled back.
TEST_P(Api, CxxLockGuardHandsOverWhenTheHolderAborts) {
    const std::string path = httpd().run_dir() + "/" + make_tag() + ".lock";
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    ASSERT_GE(fd, 0) << path;
    fchmod(fd, 0666);  // the children may run as another user
    close(fd);
    const std::string a_id = make_tag(), b_id = make_tag();
    RawClient a = connect();
    ASSERT_TRUE(a.send(http_get("/example-cxx?id=" + a_id + "&ms=10000&lock=" + path)));
    ASSERT_TRUE(a.read_until("locked\n", kIo)) << a.received();
    RawClient b = connect();
    ASSERT_TRUE(b.send(http_get("/example-cxx?id=" + b_id + "&ms=0&lock=" + path)));
    EXPECT_FALSE(b.read_at_least(1, kQuiet)) << "B got the lock A holds: " << b.received();
    a.close_rst();
    ASSERT_TRUE(b.read_until("transaction " + b_id + " done\n", kIo)) << b.received();
    EXPECT_LT(monotonic_us() - a.close_us(), kMaxStopUs) << "B waited past A's abort";
    expect_rolled_back_once(a_id);
    Outcomes o;
    EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.commits(b_id) > 0; }, &o));
    unlink(path.c_str());
}

// ------------------------------------------------------ 2. AbortGuard Off

// Explicit AbortGuard Off forbids monitoring: the same handler, same FIN,
// runs its full time. This is what makes the tests above meaningful.
TEST_P(Api, OffLocationRunsFullTime) {
    const std::string id = make_tag();
    send_and_close("/example-c-off?id=" + id + "&ms=1500", false);
    AccessLine line = await_line(id);
    EXPECT_NE(line.aborted + line.reason, "1fin") << line.raw;
    EXPECT_GE(line.duration_us, 1500000) << line.raw;
    // Whichever way it ended (commit unless the final write failed), the
    // transaction ended exactly once.
    Outcomes o;
    EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o)) << id;
    EXPECT_EQ(o.any(id), 1) << id;
}

// ---------------------------------------------------------- 3. mixed load

struct MixedRequest {
    std::string id;
    std::string target;
    bool complete = false;
    std::string expected_body;  // when complete
    enum class Close { kFinAtOnce, kRstAtOnce, kRstAfterRead, kFinAfterRead } close{};
};

// 200 requests: even ones complete (0..20 ms, read fully), odd ones are
// aborted (3 s asked) by a FIN or RST right after sending or after reading
// the first body bytes; the examples and their modes alternate.
std::vector<MixedRequest> mixed_requests(const std::string& tag, int n) {
    std::vector<MixedRequest> out;
    for (int j = 0; j < n; ++j) {
        MixedRequest m;
        m.id = tag + "r" + std::to_string(j);
        const int k = j / 2;
        if (j % 2 == 0) {
            m.complete = true;
            const std::string ms = "&ms=" + std::to_string(k % 21);
            const std::string done = "transaction " + m.id + " done\n";
            switch (k % 4) {
                case 0:
                    m.target = "/example-c?id=" + m.id + ms;
                    break;
                case 1:
                    m.target = "/example-cxx?id=" + m.id + ms;
                    break;
                case 2:
                    m.target = "/example-c?id=" + m.id + ms + "&mode=probe";
                    break;
                default:
                    m.target = "/example-c?id=" + m.id + ms + "&mode=flush";
                    break;
            }
            m.expected_body = (k % 4 == 3 ? "x\n" : "") + done;
        } else {
            const std::string ms = "&ms=3000";
            switch (k % 5) {
                case 0:
                    m.target = "/example-c?id=" + m.id + ms;
                    m.close = MixedRequest::Close::kFinAtOnce;
                    break;
                case 1:
                    m.target = "/example-cxx?id=" + m.id + ms;
                    m.close = MixedRequest::Close::kRstAtOnce;
                    break;
                case 2:
                    m.target = "/example-c?id=" + m.id + ms + "&mode=flush";
                    m.close = MixedRequest::Close::kRstAfterRead;
                    break;
                case 3:
                    m.target = "/example-cxx?id=" + m.id + ms;
                    m.close = MixedRequest::Close::kFinAtOnce;
                    break;
                default:
                    m.target = "/example-c?id=" + m.id + ms + "&mode=flush";
                    m.close = MixedRequest::Close::kFinAfterRead;
                    break;
            }
        }
        out.push_back(m);
    }
    return out;
}

// Runs one request as described; returns a failure description or "".
std::string run_mixed(int port, const MixedRequest& m) {
    RawClient c;
    if (!c.connect(port))
        return m.id + ": cannot connect";
    if (!c.send(http_get(m.target)))
        return m.id + ": cannot send";
    using Close = MixedRequest::Close;
    if (m.complete) {
        auto response = c.read_response(kIo);
        if (!response)
            return m.id + ": no response: " + c.received();
        if (response->status != 200 || response->body != m.expected_body)
            return m.id + ": bad response: " + c.received();
        c.close_fin();
        return "";
    }
    if (m.close == Close::kRstAfterRead || m.close == Close::kFinAfterRead) {
        if (!c.read_until("\r\n\r\n", kIo) || !c.read_until("x\n", kIo))
            return m.id + ": no first body bytes: " + c.received();
    }
    if (m.close == Close::kRstAtOnce || m.close == Close::kRstAfterRead) {
        c.close_rst();
    } else {
        c.close_fin();
    }
    return "";
}

TEST_P(Api, MixedRequestsCleanUpExactlyOnceWithTheRightOutcome) {
    constexpr int kRequests = 200;
    constexpr int kClients = 6;
    const std::string tag = make_tag();
    const std::vector<MixedRequest> requests = mixed_requests(tag, kRequests);
    const int64_t began = monotonic_us();

    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::thread> clients;
    for (int t = 0; t < kClients; ++t) {
        clients.emplace_back([&, t] {
            for (size_t j = static_cast<size_t>(t); j < requests.size(); j += kClients) {
                std::string f = run_mixed(httpd().port(), requests[j]);
                if (!f.empty()) {
                    std::lock_guard<std::mutex> lock(mu);
                    failures.push_back(f);
                }
            }
        });
    }
    for (auto& t : clients)
        t.join();
    for (const auto& f : failures)
        ADD_FAILURE() << f;

    auto lines = access().wait_for_count(tag, kRequests, kLogWait);
    EXPECT_EQ(lines.size(), static_cast<size_t>(kRequests));
    std::map<std::string, AccessLine> by_id;
    const std::regex id_re("id=(" + tag + "r[0-9]+)&");
    for (const auto& l : lines) {
        std::smatch m;
        if (std::regex_search(l.url, m, id_re))
            by_id[m[1]] = l;
    }

    // Every request's cleanups have run (an outcome per id, and the module's
    // per-request "ran N cleanup(s)" line) before counting.
    Outcomes o;
    auto settled = [&](const Outcomes& x) {
        if (x.cleanup_runs < kRequests)
            return false;
        return std::all_of(requests.begin(), requests.end(),
                           [&](const MixedRequest& m) { return x.any(m.id) > 0; });
    };
    EXPECT_TRUE(await_outcomes(settled, &o))
        << "outcomes not all logged; cleanup runs seen: " << o.cleanup_runs;

    int aborted = 0;
    for (const auto& m : requests) {
        const AccessLine& l = by_id[m.id];
        if (m.complete) {
            EXPECT_EQ(o.commits(m.id), 1) << m.target;
            EXPECT_EQ(o.rolled(m.id), 0) << m.target;
            EXPECT_EQ(l.aborted, "-") << m.target << " | " << l.raw;
        } else {
            ++aborted;
            EXPECT_EQ(o.rolled(m.id), 1) << m.target;
            EXPECT_EQ(o.commits(m.id), 0) << m.target;
            EXPECT_EQ(l.aborted, "1") << m.target << " | " << l.raw;
            EXPECT_LT(l.duration_us, kStoppedEarlyUs) << m.target << " | " << l.raw;
        }
    }
    EXPECT_EQ(aborted, kRequests / 2);
    std::printf("api_mixed mpm=%s requests=%d clients=%d wall_ms=%lld\n", mpm().c_str(), kRequests,
                kClients, static_cast<long long>((monotonic_us() - began) / 1000));
    std::fflush(stdout);
}

// ----------------------------------------------------- 4./5. C++ exceptions

// A cleanup that throws is logged; the other cleanups (the commit) still run
// and the completed response stays a 200 with its full body.
TEST_P(Api, CxxCleanupThrowsOthersStillRun) {
    errors().expect(R"(AG0411: C\+\+ cleanup threw: cleanup failed on purpose)");
    const std::string id = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/example-cxx?id=" + id + "&ms=10&cleanup_throws=1")));
    auto response = c.read_response(kIo);
    ASSERT_TRUE(response) << c.received();
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, "transaction " + id + " done\n");
    c.close_fin();
    AccessLine line = await_line(id);
    EXPECT_EQ(line.status, 200) << line.raw;
    EXPECT_EQ(line.aborted, "-") << line.raw;
    EXPECT_TRUE(await_error_line(R"(AG0411: C\+\+ cleanup threw: cleanup failed on purpose)"));
    Outcomes o;
    EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o)) << id;
    EXPECT_EQ(o.commits(id), 1) << id;
    EXPECT_EQ(o.rolled(id), 0) << id;
}

// A handler that throws a plain exception: a 500, logged with the text; it
// threw before its transaction began, so no outcome is logged for it.
TEST_P(Api, CxxHandlerThrowsYieldsLogged500) {
    errors().expect(R"(AG0411: handler threw: handler failed on purpose)");
    const std::string id = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/example-cxx?id=" + id + "&throw=1")));
    auto response = c.read_response(kIo);
    ASSERT_TRUE(response) << c.received();
    EXPECT_EQ(response->status, 500);
    EXPECT_TRUE(await_error_line(R"(AG0411: handler threw: handler failed on purpose)"));
    // httpd closes the connection after the 500, and only once the request
    // is done with: its pool, and so any cleanup, has run before the FIN.
    EXPECT_EQ(response->headers["connection"], "close");
    ASSERT_TRUE(c.read_all_until_close(kIo)) << c.received();
    AccessLine line = await_line(id);
    EXPECT_EQ(line.status, 500) << line.raw;
    EXPECT_EQ(outcomes().any(id), 0) << id;
}

// ------------------------------------------------------------- 6. probes

// mode=probe: the handler only sleeps and asks ABORTGUARD_PROBE_SOCKET.
TEST_P(Api, SocketProbeSeesFin) {
    stops_on_close("/example-c", false, "&mode=probe");
}

// mode=flush, completed: the body is exactly what the handler wrote, though
// it probed with a FLUSH every 10 ms (HTTP/1.0: the raw bytes up to the
// close; HTTP/1.1: the de-chunked body and a clean end of the chunks).
TEST_P(Api, FlushProbeAddsNoBytes) {
    {
        const std::string id = make_tag();
        RawClient c = connect();
        ASSERT_TRUE(c.send("GET /example-c?id=" + id +
                           "&ms=200&mode=flush HTTP/1.0\r\nHost: localhost\r\n\r\n"));
        ASSERT_TRUE(c.read_all_until_close(kIo)) << c.received();
        const std::string& raw = c.received();
        size_t head_end = raw.find("\r\n\r\n");
        ASSERT_NE(head_end, std::string::npos) << raw;
        EXPECT_EQ(raw.substr(0, raw.find("\r\n")), "HTTP/1.1 200 OK") << raw;
        EXPECT_EQ(raw.substr(head_end + 4), "x\ntransaction " + id + " done\n") << raw;
        Outcomes o;
        EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o)) << id;
        EXPECT_EQ(o.commits(id), 1) << id;
        EXPECT_EQ(o.rolled(id), 0) << id;
    }
    {
        const std::string id = make_tag();
        RawClient c = connect();
        ASSERT_TRUE(c.send(http_get("/example-c?id=" + id + "&ms=200&mode=flush")));
        auto response = c.read_response(kIo);
        ASSERT_TRUE(response) << c.received();
        EXPECT_EQ(response->status, 200);
        EXPECT_EQ(response->headers["transfer-encoding"], "chunked") << c.received();
        EXPECT_EQ(response->body, "x\ntransaction " + id + " done\n") << c.received();
        // Nothing after the last chunk: the connection is ready for the next
        // request, whose response starts right there.
        const size_t first_len = c.received().size();
        ASSERT_TRUE(c.send(http_get("/example-c?id=" + make_tag() + "&ms=0")));
        auto next = c.read_response(kIo);
        ASSERT_TRUE(next) << c.received();
        EXPECT_EQ(c.received().compare(first_len, 9, "HTTP/1.1 "), 0) << c.received();
        EXPECT_EQ(c.received().compare(first_len - 5, 5, "0\r\n\r\n"), 0) << c.received();
        c.close_fin();
        Outcomes o;
        EXPECT_TRUE(await_outcomes([&](const Outcomes& x) { return x.any(id) > 0; }, &o)) << id;
        EXPECT_EQ(o.commits(id), 1) << id;
    }
}

// mode=flush, the client resets after reading the first bytes: the probing
// handler stops within the bound.
TEST_P(Api, FlushProbeStopsOnRst) {
    const std::string id = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/example-c?id=" + id + "&ms=5000&mode=flush")));
    ASSERT_TRUE(c.read_until("\r\n\r\n", kIo)) << c.received();
    ASSERT_TRUE(c.read_until("x\n", kIo)) << c.received();
    c.close_rst();
    int64_t seen = 0;
    AccessLine line = await_line(id, &seen);
    expect_stopped_quickly(line, c.close_us(), seen);
    EXPECT_TRUE(line.reason == "rst" || line.reason == "write") << line.raw;
    expect_rolled_back_once(id);
}

INSTANTIATE_TEST_SUITE_P(Mpm, Api, testing::ValuesIn(all_mpms()), mpm_param_name);

// ----------------------------------------------------- 2. the server stops

// A graceful stop does not wait for the examples' 20 s of work: at the stop
// notice each rolls its transaction back, once, and answers 503 with
// Retry-After, or, when its response has started (C mode=flush, C++ under a
// file lock), ends that response truncated: no last chunk, so no client
// takes it for complete. Without the notice the handlers would compute to
// the end, and the graceful stop (no GracefulShutdownTimeout) would wait
// for them: the reads below would time out, and httpd would not exit.
class ApiStop : public testing::TestWithParam<std::string> {};

struct StopCase {
    std::string target;  // without the id
    std::string ready;   // in the error log ("AGX...") or in the body
    bool started;        // the response has started: expect it truncated
    std::string id = make_tag();
    RawClient client = {};
};

TEST_P(ApiStop, ExamplesEndEarlyAndRollBackWhenTheServerStops) {
    Httpd httpd(api_options("api-stop-" + GetParam(), GetParam()));
    ASSERT_TRUE(httpd.start());
    ErrorLogWatch log;
    log.start(httpd.error_log_path());
    const std::string lock = httpd.run_dir() + "/stop.lock";
    const int fd = open(lock.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    ASSERT_GE(fd, 0) << lock;
    fchmod(fd, 0666);  // the children may run as another user
    close(fd);
    StopCase cases[] = {{"/example-c?ms=20000", "AGX0004", false},
                        {"/example-cxx?ms=20000", "AGX0014", false},
                        {"/example-c?ms=20000&mode=flush", "x\n", true},
                        {"/example-cxx?ms=20000&lock=" + lock, "locked\n", true}};
    for (auto& t : cases) {
        ASSERT_TRUE(t.client.connect(httpd.port()));
        ASSERT_TRUE(t.client.send(http_get(t.target + "&id=" + t.id)));
        if (t.started)
            ASSERT_TRUE(t.client.read_until(t.ready, kIo)) << t.target;
        else
            ASSERT_TRUE(await_log_line(log, t.ready + ": transaction " + t.id + " begun"));
    }
    const int64_t signalled = monotonic_us();
    ASSERT_EQ(::kill(httpd.pid(), SIGWINCH), 0);  // apachectl graceful-stop
    for (auto& t : cases) {
        SCOPED_TRACE(t.target);
        if (t.started) {
            EXPECT_TRUE(t.client.read_all_until_close(kIo)) << t.client.received();
            EXPECT_EQ(t.client.received().find("\r\n0\r\n\r\n"), std::string::npos)
                << "ended as if complete: " << t.client.received();
        } else {
            auto rsp = t.client.read_response(kIo);
            ASSERT_TRUE(rsp) << "no answer before the work's end: " << t.client.received();
            EXPECT_EQ(rsp->status, 503);
            EXPECT_EQ(rsp->headers["retry-after"], "1");
        }
        std::printf("example_stop_answer_us mpm=%s target=%s value=%lld\n", GetParam().c_str(),
                    t.target.c_str(), static_cast<long long>(monotonic_us() - signalled));
        t.client.close_fin();  // httpd's lingering close need not wait for us
    }
    // httpd's graceful stop ends by itself; then every outcome is logged.
    for (Deadline d(kLogWait); !process_gone(httpd.pid()) && !d.expired();)
        std::this_thread::sleep_for(kPoll);
    EXPECT_TRUE(process_gone(httpd.pid())) << "the graceful stop still waits";
    LogCursor all;
    all.start_at(httpd.error_log_path(), 0);
    const Outcomes o = outcomes_in(all.new_lines());
    for (const auto& t : cases) {
        EXPECT_EQ(o.rolled(t.id), 1) << t.target;
        EXPECT_EQ(o.commits(t.id), 0) << t.target;
    }
    EXPECT_TRUE(httpd.stop());
}

INSTANTIATE_TEST_SUITE_P(Mpm, ApiStop, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
