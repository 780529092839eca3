// Integration test harness: runs a real httpd (Debian's apache2 binary) from
// a config generated into AG_TEST_WORKDIR, on a free loopback port, with the
// freshly built mod_abortguard and the test-only handler module loaded.
//
// Readiness and log events are awaited by polling with deadlines; the error
// log is checked after every test; httpd is always stopped (SIGTERM, bounded
// wait, then SIGKILL of its process group).
//
// Build-time macros (string literals, set by Makefile.am): AG_HTTPD_BIN,
// AG_SYS_MODULES_DIR, AG_MODULE_SO, AG_TEST_MODULE_SO, AG_LOCKTEST_SO,
// AG_LIFETEST_SO, AG_EXAMPLE_C_SO, AG_EXAMPLE_CXX_SO, AG_TEST_WORKDIR,
// AG_ASAN_RUNTIME (empty when configure found none).
// Environment: AG_TEST_STOCK=1 leaves mod_abortguard and its directives out
// (stock httpd; checks the harness itself, the detection tests then fail).
// AG_TEST_MPMS="event worker" limits the MPMs (default: all three).
// AG_TEST_SANITIZER=asan runs every httpd under ASan+UBSan: see below.
//
// Sanitizer runs (AG_TEST_SANITIZER=asan; tests/integration_asan sets it):
// every httpd loads the <name>_asan.so builds of mod_abortguard, the test
// modules and the examples (module_so(); LoadModule lines a test writes with
// the plain paths are rewritten to them), starts with the ASan runtime in
// LD_PRELOAD (httpd and APR are not instrumented; the runtime must be loaded
// first) and writes ASan reports into <run dir>/sanitizer/, one file per
// process (UBSan's go to httpd's stderr, the error log: see
// Httpd::environment()).  Every report is fatal to the process that hits it
// (halt_on_error, -fno-sanitize-recover=all) and fails a test: the fixture's
// after each test (HttpdTest::TearDown; a report that shows up late fails the
// next one, in SetUp), Httpd::stop() for any httpd, and ~Httpd for an httpd
// whose owner never saw its reports.  Run dirs go to AG_TEST_WORKDIR/asan/.
// Extra options: AG_TEST_ASAN_OPTIONS and AG_TEST_UBSAN_OPTIONS are appended.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "raw_client.h"

namespace agtest {

// Config lines that load httpd's own module mod_NAME from the system's
// module directory, unless the httpd binary has it built in.
std::string sys_module(const std::string& name);

// The sanitizer this run's httpds use: "" (none) or "asan" (ASan+UBSan),
// from AG_TEST_SANITIZER; an unknown value ends the test program.
const std::string& sanitizer();
bool under_sanitizer();
// The build of one of our modules that httpd loads in this run: "abortguard",
// "test", "locktest", "lifetest", "example_c", "example_cxx", "misuse" or
// "cxxtest" (the plain
// .so, or its _asan.so under the sanitizer); "" (and a test failure) for any
// other name.
std::string module_so(const std::string& name);
// Its file name ("mod_abortguard_lifetest.so"), as httpd's logs name it.
std::string module_file_name(const std::string& name);
// `config` with the plain builds' paths (AG_EXAMPLE_C_SO ...) replaced by
// module_so()'s: what lets tests write "LoadModule ... " AG_LOCKTEST_SO.
std::string route_module_paths(std::string config);

// A port the kernel just handed out for 127.0.0.1 (0 if none): someone may
// take it before the caller binds it, so callers retry.
int pick_free_port();

// A token unique within this test run ("agt17z"); tests append "&t=<tag>" to
// a URL to find exactly their own access-log line.
std::string make_tag();

// One line of the access log, format (see Httpd::write_config):
// %>s ABORTED REASON START_US NOTICED_US END_US %D %H %U%q
struct AccessLine {
    std::string raw;
    int status = 0;
    std::string aborted;                                  // "1" or "-"
    std::string reason;                                   // "fin", "rst", "write" or "-"
    std::optional<int64_t> start_us, noticed_us, end_us;  // handler's clock
    int64_t duration_us = 0;                              // %D
    std::string protocol;                                 // %H
    std::string url;                                      // %U%q
    // Handler run time (END - START), when the handler recorded both.
    std::optional<int64_t> handler_us() const;
};
std::optional<AccessLine> parse_access_line(const std::string& line);

// Complete lines appended to a file since a remembered offset.
class LogCursor {
  public:
    void start(const std::string& path);  // remember the current end
    void start_at(const std::string& path, off_t offset);
    // `end` (optional) receives the offset just past the last line returned.
    std::vector<std::string> new_lines(off_t* end = nullptr) const;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    off_t offset_ = 0;
};

class AccessLog {
  public:
    void start(const std::string& path) { cursor_.start(path); }
    using Predicate = std::function<bool(const AccessLine&)>;
    // Polls the new lines until one matches or the timeout passes.
    std::optional<AccessLine> wait_for(const Predicate& match, Millis timeout);
    std::optional<AccessLine> wait_for(const std::string& url_part, Millis timeout);
    // Waits until `count` lines contain url_part; returns what it found.
    std::vector<AccessLine> wait_for_count(const std::string& url_part, size_t count,
                                           Millis timeout);

  private:
    std::vector<AccessLine> matching(const Predicate& match) const;
    LogCursor cursor_;
};

// Error-log lines that fail a test: [*:error], [*:warn], [*:crit],
// [*:alert], [*:emerg] and children that died of a signal.
class ErrorLogWatch {
  public:
    void start(const std::string& path);
    void start_at(const std::string& path, off_t offset);
    // Lines matching this (ECMAScript) regex are not problems in this test.
    void expect(const std::string& pattern);
    std::vector<std::string> new_lines() const { return cursor_.new_lines(); }
    // `checked_to` (optional) receives the offset up to which it looked.
    std::vector<std::string> problems(off_t* checked_to = nullptr) const;

  private:
    LogCursor cursor_;
    std::vector<std::regex> expected_;
};

struct CommandResult {
    int exit_code = -1;  // -1 when killed or not started
    bool timed_out = false;
    std::string output;  // stdout and stderr
};
// fork/exec argv[0] (PATH search), bounded by timeout, output captured.
// `env` (NAME=VALUE entries), when not empty, is the whole environment.
CommandResult run_command(const std::vector<std::string>& argv, Millis timeout,
                          const std::vector<std::string>& env = {});
// In a freshly forked child: a process group of its own, stdin from `in_fd`,
// stdout and stderr to `out_fd`, then argv[0] (PATH search) with `env` as
// its environment when not empty; exit 127 if that fails.
[[noreturn]] void exec_in_child(const std::vector<std::string>& argv, int in_fd, int out_fd,
                                const std::vector<std::string>& env = {});

struct HttpdOptions {
    std::string name;  // run dir: AG_TEST_WORKDIR/<name>
    std::string mpm = "event";
    bool load_abortguard = true;  // false under AG_TEST_STOCK=1
    bool abortguard_on = true;    // global "AbortGuard On"
    bool tls = false;             // second listener with mod_ssl
    bool h2 = false;              // mod_http2, "Protocols h2c http/1.1" (under
                                  // prefork its start-up advisory is tolerated)
    // Appended to the config; "@RUNDIR@" is replaced by the run dir.
    std::string extra_config;
    // Files to create (path relative to the run dir -> content).
    std::map<std::string, std::string> files;
    // Error-log lines (regexes) that are known, harmless and not about the
    // code under test; tolerated for the whole life of this httpd.
    std::vector<std::string> tolerated_log_lines;
};

// httpd's advisories, logged at error, that its workers are all busy
// (MaxRequestWorkers reached: prefork AH00161, worker AH00286, event
// AH00484) or nearly so (worker AH00287, within MinSpareThreads): for a
// test that occupies the workers on purpose.
inline const char* const kWorkersBusyAdvisories = "AH00(161|286|287|484): ";

class Httpd {
  public:
    explicit Httpd(HttpdOptions options);
    // Stops httpd if it runs; a sanitizer report nobody has seen yet fails
    // the current test.
    ~Httpd();
    Httpd(const Httpd&) = delete;
    Httpd& operator=(const Httpd&) = delete;

    // Writes the config, starts httpd and waits until it answers (10 s).
    // Retries with new ports when the port was taken meanwhile.
    testing::AssertionResult start();
    // SIGTERM, bounded wait, SIGKILL; then checks that nothing is left and
    // that the error log tail has no problems and no sanitizer reported.
    testing::AssertionResult stop();
    // Graceful restart (SIGUSR1, as `apachectl graceful`): waits until the
    // new generation has logged that it resumed and answers again (10 s).
    testing::AssertionResult graceful();
    // Writes the run dir and config only (for `apache2 -t`).
    testing::AssertionResult prepare();
    CommandResult check_syntax() const;  // apache2 -t -f conf

    bool running() const { return pid_ > 0; }
    pid_t pid() const { return pid_; }  // the parent process
    int port() const { return port_; }
    int tls_port() const { return tls_port_; }
    const HttpdOptions& options() const { return options_; }
    const std::string& run_dir() const { return run_dir_; }
    std::string conf_path() const { return run_dir_ + "/httpd.conf"; }
    std::string error_log_path() const { return run_dir_ + "/error.log"; }
    std::string access_log_path() const { return run_dir_ + "/access.log"; }
    std::string stdout_path() const { return run_dir_ + "/stdout.log"; }
    // Where httpd's processes write sanitizer reports (asan.PID, ubsan.PID).
    std::string sanitizer_dir() const { return run_dir_ + "/sanitizer"; }
    // The environment httpd runs with: ours, plus the sanitizer's runtime
    // and options under the sanitizer.
    std::vector<std::string> environment() const;

    // Sanitizer reports written since the last call (each "FILE:\nTEXT"):
    // the report files in sanitizer_dir(), and sanitizer output (with its
    // stack) on httpd's stderr, i.e. in stdout.log and error.log. Waits
    // (bounded) for the writer to finish its report. Empty without a
    // sanitizer.
    std::vector<std::string> sanitizer_reports();

    // Problems in the error log since the last call (or since start).
    std::vector<std::string> unchecked_problems();
    // A test checked the log up to `offset` itself.
    void mark_checked(off_t offset) { tail_watch_.start_at(error_log_path(), offset); }

  private:
    enum class Launch { kReady, kBindFailed, kFailed };
    testing::AssertionResult write_files();
    std::string config_text() const;
    Launch launch(std::string* why);
    bool answers() const;
    bool reap(Millis timeout);
    void let_closing_connections_finish();
    testing::AssertionResult stop(std::vector<std::string>* reports);

    HttpdOptions options_;
    std::string run_dir_;
    int port_ = 0;
    int tls_port_ = 0;
    pid_t pid_ = -1;
    ErrorLogWatch tail_watch_;  // problems not yet attributed to a test
    // Sanitizer output already returned: bytes per report file, and how far
    // the logs that get httpd's stderr were scanned.
    std::map<std::string, size_t> reports_seen_;
    LogCursor stderr_cursor_;   // stdout.log
    LogCursor error_log_scan_;  // error.log
};

// `apache2 -t` on the standard config plus `extra`, in a run dir of its own
// whose name holds no directive name (the output names the file).
CommandResult syntax_check(const std::string& extra);

// One running httpd per MPM for a test suite, started on first use.
class HttpdPool {
  public:
    using Factory = std::function<HttpdOptions(const std::string& mpm)>;
    explicit HttpdPool(Factory factory) : factory_(std::move(factory)) {}
    ~HttpdPool() { stop_all(); }
    // nullptr (with a gtest failure recorded) if it does not come up.
    Httpd* get(const std::string& mpm);
    void stop_all();

  private:
    Factory factory_;
    std::map<std::string, std::unique_ptr<Httpd>> servers_;
};

// The MPMs every scenario runs under: event, worker, prefork, or those
// AG_TEST_MPMS names (space or comma separated).
std::vector<std::string> all_mpms();
std::string mpm_param_name(const testing::TestParamInfo<std::string>& info);

// Fixture for tests against a pooled httpd; the parameter is the MPM name.
// TearDown fails the test on unexpected error-log lines and on sanitizer
// reports.
class HttpdTest : public testing::TestWithParam<std::string> {
  protected:
    void SetUp() override;
    void TearDown() override;
    virtual HttpdPool& pool() = 0;

    Httpd& httpd() { return *httpd_; }
    AccessLog& access() { return access_; }
    ErrorLogWatch& errors() { return errors_; }
    const std::string& mpm() const { return GetParam(); }
    // A client connected to the plain HTTP port (test fails if it can't).
    RawClient connect();
    // The access-log line (since this test began) whose URL contains `tag`,
    // waiting up to 10 s; the test fails without one.
    AccessLine await(const std::string& tag);
    std::string base_url() const;      // http://127.0.0.1:port
    std::string tls_base_url() const;  // https://127.0.0.1:tls_port

  private:
    Httpd* httpd_ = nullptr;
    AccessLog access_;
    ErrorLogWatch errors_;
};

}  // namespace agtest
