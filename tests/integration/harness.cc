#include "harness.h"
#include "procfs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef AG_HTTPD_BIN
#error "AG_HTTPD_BIN must be defined (path of the httpd binary)"
#endif
#ifndef AG_SYS_MODULES_DIR
#error "AG_SYS_MODULES_DIR must be defined (httpd's module directory)"
#endif
#ifndef AG_MODULE_SO
#error "AG_MODULE_SO must be defined (the built mod_abortguard.so)"
#endif
#ifndef AG_TEST_MODULE_SO
#error "AG_TEST_MODULE_SO must be defined (the built mod_abortguard_test.so)"
#endif
#ifndef AG_TEST_WORKDIR
#error "AG_TEST_WORKDIR must be defined (where run dirs are generated)"
#endif
#if !defined(AG_LOCKTEST_SO) || !defined(AG_LIFETEST_SO) || !defined(AG_EXAMPLE_C_SO) || \
    !defined(AG_EXAMPLE_CXX_SO)
#error "AG_LOCKTEST_SO, AG_LIFETEST_SO, AG_EXAMPLE_C_SO, AG_EXAMPLE_CXX_SO must be defined"
#endif
#if !defined(AG_ASAN_RUNTIME) || !defined(AG_CXX_RUNTIME)
#error "AG_ASAN_RUNTIME, AG_CXX_RUNTIME must be defined (the runtimes to preload, or empty)"
#endif

extern char** environ;

namespace fs = std::filesystem;

namespace agtest {

namespace {

// Polling interval while awaiting an event (a log line, a port answering).
constexpr Millis kPollInterval(10);
constexpr Millis kStartTimeout(10000);
constexpr Millis kStopTimeout(10000);
constexpr int kStartAttempts = 5;
// How long a sanitizer report's process may take to finish writing it (it
// symbolizes the stack first) and exit (halt_on_error).
constexpr Millis kReportTimeout(15000);

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines)
        out += "  " + l + "\n";
    return out;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool write_file(const std::string& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    return static_cast<bool>(out);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
        s.replace(p, from.size(), to);
    }
    return s;
}

std::optional<int64_t> number_or_none(const std::string& field) {
    if (field.empty() || field == "-")
        return std::nullopt;
    return std::strtoll(field.c_str(), nullptr, 10);
}

}  // namespace

// A port the kernel just handed out for 127.0.0.1. Someone may take it
// before httpd binds it; Httpd::start() retries in that case.
int pick_free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    ::close(fd);
    return port;
}

namespace {

bool running_as_root() {
    return ::geteuid() == 0;
}

// As root, httpd's children run as www-data and must be able to reach the
// run dir (the core stats DocumentRoot paths; .htaccess files are read).
std::string unreachable_ancestor(const std::string& dir) {
    for (fs::path p = fs::path(dir); !p.empty() && p != p.root_path(); p = p.parent_path()) {
        struct stat st {};
        if (::stat(p.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH)) {
            return p.string();
        }
    }
    return "";
}

// The first line of sanitizer output on httpd's stderr (see
// Httpd::sanitizer_reports): a UBSan report, an ASan report that could not
// go to its file, the runtime's complaints about how it was loaded; never an
// httpd log line ("[date] ..."). Not ASan's "AddressSanitizer:DEADLYSIGNAL",
// which only announces the report it writes to its file.
bool sanitizer_stderr_line(const std::string& line) {
    static const std::regex re(R"(Sanitizer|runtime error:|LD_PRELOAD)");
    return line.rfind('[', 0) != 0 && line != "AddressSanitizer:DEADLYSIGNAL" &&
           std::regex_search(line, re);
}

// Waits (bounded) until `path` has not grown for a second: a process is
// writing a report there (and symbolizing its stack as it goes).
void wait_until_quiet(const std::string& path) {
    auto size = [&path] {
        struct stat st {};
        return ::stat(path.c_str(), &st) == 0 ? st.st_size : off_t(0);
    };
    off_t last = size();
    int quiet = 0;
    for (Deadline deadline(kReportTimeout); quiet < 100 && !deadline.expired();) {
        std::this_thread::sleep_for(kPollInterval);
        off_t now = size();
        quiet = now == last ? quiet + 1 : 0;
        last = now;
    }
}

// Sanitizer output among the new lines of a log that gets httpd's stderr:
// each block is a sanitizer line and the lines after it up to a blank one,
// its stack, leaving out httpd log lines ("[date] ..."), which other
// processes write in between. Moves the cursor past what it read.
std::vector<std::string> sanitizer_output(LogCursor& cursor) {
    std::vector<std::string> blocks;
    if (cursor.path().empty())
        return blocks;
    off_t end = 0;
    auto lines = cursor.new_lines(&end);
    if (std::none_of(lines.begin(), lines.end(), sanitizer_stderr_line)) {
        cursor.start_at(cursor.path(), end);
        return blocks;
    }
    wait_until_quiet(cursor.path());
    lines = cursor.new_lines(&end);
    cursor.start_at(cursor.path(), end);
    for (size_t i = 0; i < lines.size(); ++i) {
        if (!sanitizer_stderr_line(lines[i]))
            continue;
        std::string block = cursor.path() + ":\n" + lines[i] + "\n";
        for (;
             i + 1 < lines.size() && !lines[i + 1].empty() && !sanitizer_stderr_line(lines[i + 1]);
             ++i) {
            if (lines[i + 1].rfind('[', 0) != 0)
                block += lines[i + 1] + "\n";
        }
        blocks.push_back(block);
    }
    return blocks;
}

// The pid in a report file's name ("asan.1234"), or 0.
pid_t report_writer(const std::string& filename) {
    size_t dot = filename.rfind('.');
    if (dot == std::string::npos)
        return 0;
    return static_cast<pid_t>(std::strtol(filename.c_str() + dot + 1, nullptr, 10));
}

[[noreturn]] void bad_environment(const std::string& why) {
    std::fprintf(stderr, "integration tests: %s\n", why.c_str());
    std::fflush(stderr);
    std::_Exit(2);
}

}  // namespace

// ----------------------------------------------------------------- sanitizer

const std::string& sanitizer() {
    static const std::string mode = [] {
        const char* env = std::getenv("AG_TEST_SANITIZER");
        std::string m = env ? env : "";
        if (m == "none")
            m.clear();
        if (!m.empty() && m != "asan")
            bad_environment("AG_TEST_SANITIZER=" + m + ": unknown (known: asan)");
        if (m == "asan" && (std::string(AG_ASAN_RUNTIME).empty() || !fs::exists(AG_ASAN_RUNTIME)))
            bad_environment(
                "AG_TEST_SANITIZER=asan, but configure found no ASan runtime to "
                "preload (AG_ASAN_RUNTIME='" AG_ASAN_RUNTIME "')");
        return m;
    }();
    return mode;
}

bool under_sanitizer() {
    return !sanitizer().empty();
}

namespace {

struct ModuleBuild {
    const char* name;
    const char* plain;  // the plain build; <plain minus .so>_<sanitizer>.so
};
const ModuleBuild kModules[] = {
    {"abortguard", AG_MODULE_SO},   {"test", AG_TEST_MODULE_SO},
    {"locktest", AG_LOCKTEST_SO},   {"lifetest", AG_LIFETEST_SO},
    {"example_c", AG_EXAMPLE_C_SO}, {"example_cxx", AG_EXAMPLE_CXX_SO},
    {"misuse", AG_MISUSE_SO},       {"cxxtest", AG_CXXTEST_SO},
};

std::string sanitized_path(const std::string& plain) {
    const std::string so = ".so";
    return plain.substr(0, plain.size() - so.size()) + "_" + sanitizer() + so;
}

}  // namespace

std::string module_so(const std::string& name) {
    for (const auto& m : kModules) {
        if (name == m.name)
            return under_sanitizer() ? sanitized_path(m.plain) : m.plain;
    }
    ADD_FAILURE() << "module_so: no module named '" << name << "'";
    return "";
}

std::string module_file_name(const std::string& name) {
    return fs::path(module_so(name)).filename().string();
}

std::string route_module_paths(std::string config) {
    if (!under_sanitizer())
        return config;
    for (const auto& m : kModules) {
        const std::string plain = m.plain;
        const std::string routed = sanitized_path(plain);
        for (size_t p = config.find(plain); p != std::string::npos;
             p = config.find(plain, p + routed.size())) {
            config.replace(p, plain.size(), routed);
        }
    }
    return config;
}

// ---------------------------------------------------------------- tags, lines

std::string sys_module(const std::string& name) {
    return "<IfModule !" + name + "_module>\n  LoadModule " + name + "_module " +
           AG_SYS_MODULES_DIR + "/mod_" + name + ".so\n</IfModule>\n";
}

std::string make_tag() {
    static std::atomic<int> counter{0};
    // The trailing 'z' keeps "agt1z" from matching inside "agt12z".
    return "agt" + std::to_string(++counter) + "z";
}

std::optional<int64_t> AccessLine::handler_us() const {
    if (!start_us || !end_us)
        return std::nullopt;
    return *end_us - *start_us;
}

std::optional<AccessLine> parse_access_line(const std::string& line) {
    std::istringstream in(line);
    AccessLine a;
    std::string status, start, noticed, end, duration;
    if (!(in >> status >> a.aborted >> a.reason >> start >> noticed >> end >> duration >>
          a.protocol >> a.url)) {
        return std::nullopt;
    }
    a.raw = line;
    a.status = std::atoi(status.c_str());
    a.start_us = number_or_none(start);
    a.noticed_us = number_or_none(noticed);
    a.end_us = number_or_none(end);
    a.duration_us = std::strtoll(duration.c_str(), nullptr, 10);
    return a;
}

// ----------------------------------------------------------------- log files

void LogCursor::start(const std::string& path) {
    path_ = path;
    struct stat st {};
    offset_ = ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

void LogCursor::start_at(const std::string& path, off_t offset) {
    path_ = path;
    offset_ = offset;
}

std::vector<std::string> LogCursor::new_lines(off_t* end) const {
    std::vector<std::string> lines;
    if (end)
        *end = offset_;
    std::ifstream in(path_, std::ios::binary);
    if (!in || !in.seekg(offset_))
        return lines;
    std::string rest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t pos = 0;
    // Only complete lines: a line being written has no '\n' yet.
    for (size_t nl; (nl = rest.find('\n', pos)) != std::string::npos; pos = nl + 1) {
        lines.push_back(rest.substr(pos, nl - pos));
        if (end)
            *end = offset_ + static_cast<off_t>(nl + 1);
    }
    return lines;
}

std::vector<AccessLine> AccessLog::matching(const Predicate& match) const {
    std::vector<AccessLine> found;
    for (const auto& raw : cursor_.new_lines()) {
        auto line = parse_access_line(raw);
        if (line && match(*line))
            found.push_back(*line);
    }
    return found;
}

std::optional<AccessLine> AccessLog::wait_for(const Predicate& match, Millis timeout) {
    auto found = std::vector<AccessLine>();
    Deadline deadline(timeout);
    for (;;) {
        found = matching(match);
        if (!found.empty())
            return found.front();
        if (deadline.expired())
            return std::nullopt;
        std::this_thread::sleep_for(kPollInterval);
    }
}

std::optional<AccessLine> AccessLog::wait_for(const std::string& url_part, Millis timeout) {
    return wait_for([&](const AccessLine& l) { return l.url.find(url_part) != std::string::npos; },
                    timeout);
}

std::vector<AccessLine> AccessLog::wait_for_count(const std::string& url_part, size_t count,
                                                  Millis timeout) {
    auto has_part = [&](const AccessLine& l) { return l.url.find(url_part) != std::string::npos; };
    Deadline deadline(timeout);
    for (;;) {
        auto found = matching(has_part);
        if (found.size() >= count || deadline.expired())
            return found;
        std::this_thread::sleep_for(kPollInterval);
    }
}

void ErrorLogWatch::start(const std::string& path) {
    cursor_.start(path);
    expected_.clear();
}

void ErrorLogWatch::start_at(const std::string& path, off_t offset) {
    cursor_.start_at(path, offset);
    expected_.clear();
}

void ErrorLogWatch::expect(const std::string& pattern) {
    expected_.emplace_back(pattern);
}

std::vector<std::string> ErrorLogWatch::problems(off_t* checked_to) const {
    static const std::regex bad(R"(:(error|warn|crit|alert|emerg)\]|exit signal)");
    // Start-up warnings about the machine, not about the code under test:
    // Debian's mod_ssl built against a newer OpenSSL than the installed one.
    static const std::regex machine_noise(
        R"(AH01882: Init: this version of mod_ssl was compiled against a newer)");
    std::vector<std::string> out;
    for (const auto& line : cursor_.new_lines(checked_to)) {
        if (!std::regex_search(line, bad))
            continue;
        bool allowed = std::regex_search(line, machine_noise);
        for (const auto& e : expected_)
            allowed = allowed || std::regex_search(line, e);
        if (!allowed)
            out.push_back(line);
    }
    return out;
}

// ------------------------------------------------------------------ commands

void exec_in_child(const std::vector<std::string>& argv, int in_fd, int out_fd,
                   const std::vector<std::string>& env) {
    ::setpgid(0, 0);
    ::dup2(in_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (env.empty()) {
        ::execvp(args[0], args.data());
    } else {
        std::vector<char*> envp;
        for (const auto& e : env)
            envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
        ::execvpe(args[0], args.data(), envp.data());
    }
    _exit(127);
}

CommandResult run_command(const std::vector<std::string>& argv, Millis timeout,
                          const std::vector<std::string>& env) {
    CommandResult result;
    int out[2];
    if (argv.empty() || ::pipe2(out, O_CLOEXEC) != 0)
        return result;
    pid_t pid = ::fork();
    if (pid == 0)
        exec_in_child(argv, ::open("/dev/null", O_RDONLY), out[1], env);
    ::close(out[1]);
    Deadline deadline(timeout);
    for (;;) {
        pollfd p{out[0], POLLIN, 0};
        if (::poll(&p, 1, deadline.remaining_ms()) <= 0) {
            result.timed_out = deadline.expired();
            if (result.timed_out)
                break;
            continue;
        }
        char buf[4096];
        ssize_t n = ::read(out[0], buf, sizeof(buf));
        if (n <= 0)
            break;
        result.output.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    if (result.timed_out)
        ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFEXITED(status))
        result.exit_code = WEXITSTATUS(status);
    return result;
}

// --------------------------------------------------------------------- httpd

Httpd::Httpd(HttpdOptions options) : options_(std::move(options)) {
    if (std::getenv("AG_TEST_STOCK"))
        options_.load_abortguard = false;
    // mod_http2 calls prefork unsupported at start-up, yet serves h2c (the
    // HTTP/2 tests check %H); the advisory is not about the code under test.
    if (options_.h2 && options_.mpm == "prefork")
        options_.tolerated_log_lines.push_back(
            "AH10034: The mpm module \\(prefork.c\\) is not supported");
    // A sanitizer run has run dirs of its own: it may run beside a plain one.
    run_dir_ = std::string(AG_TEST_WORKDIR) + "/" + (under_sanitizer() ? sanitizer() + "/" : "") +
               options_.name;
}

Httpd::~Httpd() {
    // A test that stops its httpd itself sees the reports in stop()'s
    // result; here nobody would, so they fail the current test.
    std::vector<std::string> reports;
    if (running())
        stop(&reports);
    for (const auto& r : sanitizer_reports())
        reports.push_back(r);
    if (!reports.empty()) {
        ADD_FAILURE() << options_.name << ": sanitizer reports:\n" << join_lines(reports);
    }
}

std::vector<std::string> Httpd::environment() const {
    std::vector<std::string> env;
    std::string preload;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry = *e;
        auto is = [&entry](const char* name) {
            return entry.rfind(std::string(name) + "=", 0) == 0;
        };
        if (is("ASAN_OPTIONS") || is("UBSAN_OPTIONS")) {
            if (under_sanitizer())
                continue;  // ours below, not the ones make check sets for its own binaries
        }
        if (is("LD_PRELOAD")) {
            preload = entry.substr(std::strlen("LD_PRELOAD="));
            continue;
        }
        env.push_back(entry);
    }
    if (under_sanitizer()) {
        // The ASan runtime must come first among the loaded libraries; httpd
        // is not linked with it, so it is preloaded. libstdc++ right after
        // it: httpd is a C program, and ASan must find the __cxa_throw it
        // wraps when it starts, not once a C++ module brings libstdc++ in
        // (else the first exception fails ASan's CHECK "real___cxa_throw !=
        // 0": GCC PR 84428, google/sanitizers#934).
        const std::string cxx = AG_CXX_RUNTIME;
        preload = std::string(AG_ASAN_RUNTIME) + (cxx.empty() ? "" : " " + cxx) +
                  (preload.empty() ? "" : " " + preload);
        auto extra = [](const char* name) {
            const char* v = std::getenv(name);
            return v && *v ? std::string(":") + v : std::string();
        };
        // detect_leaks=0: httpd frees its pools at exit or never, on purpose.
        // Every report ends the process that hit it (halt_on_error), so the
        // test sees it in the report file and, usually, as a failed request.
        // allow_user_segv_handler=0: httpd's own SIGSEGV/SIGBUS handler (it
        // only re-raises for a core dump) does not replace ASan's, so a
        // crash anywhere in httpd, ours or not, is a report with a stack.
        // A smaller quarantine than the default 256 MB per process: prefork
        // runs up to 16 children.
        env.push_back("ASAN_OPTIONS=log_path=" + sanitizer_dir() +
                      "/asan:detect_leaks=0:halt_on_error=1:abort_on_error=0"
                      ":allow_user_segv_handler=0:quarantine_size_mb=64" +
                      extra("AG_TEST_ASAN_OPTIONS"));
        // GCC's UBSan runtime is a library of its own (libubsan) beside
        // libasan, and applies its log_path through __sanitizer_set_report_path,
        // which libasan (loaded first) interposes: it moves ASan's report
        // file (harmless: a UBSan report ends the process) and UBSan itself
        // keeps writing to stderr, which in httpd is the error log. So
        // sanitizer_reports() reads UBSan's reports there; the log_path
        // here is for runtimes that honour it (clang's, where UBSan is part
        // of the ASan runtime).
        env.push_back("UBSAN_OPTIONS=log_path=" + sanitizer_dir() +
                      "/ubsan:print_stacktrace=1:halt_on_error=1" + extra("AG_TEST_UBSAN_OPTIONS"));
    }
    if (!preload.empty())
        env.push_back("LD_PRELOAD=" + preload);
    return env;
}

std::vector<std::string> Httpd::sanitizer_reports() {
    std::vector<std::string> reports;
    if (!under_sanitizer())
        return reports;
    std::vector<fs::path> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(sanitizer_dir(), ec))
        files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
        size_t& seen = reports_seen_[file.string()];
        if (fs::file_size(file, ec) <= seen)
            continue;
        // The writer symbolizes its stack while it writes, then exits.
        const pid_t writer = report_writer(file.filename().string());
        for (Deadline deadline(kReportTimeout);
             writer > 0 && !process_gone(writer) && !deadline.expired();) {
            std::this_thread::sleep_for(kPollInterval);
        }
        const std::string text = read_file(file.string());
        if (text.size() > seen) {
            reports.push_back(file.string() + ":\n" + text.substr(seen));
            seen = text.size();
        }
    }
    for (auto* cursor : {&stderr_cursor_, &error_log_scan_}) {
        for (auto& block : sanitizer_output(*cursor))
            reports.push_back(std::move(block));
    }
    return reports;
}

std::string Httpd::config_text() const {
    const std::string run = run_dir_;
    const bool ag = options_.load_abortguard;
    // Directives of mod_abortguard, left out when testing stock httpd.
    auto agd = [ag](const std::string& d) { return ag ? "  " + d + "\n" : ""; };
    std::ostringstream c;
    c << "# Generated by tests/integration/harness.cc; rewritten on each run.\n"
      << "ServerRoot \"" << run << "\"\n"
      << "ServerName localhost\n"
      << "PidFile \"" << run << "/httpd.pid\"\n"
      << "DefaultRuntimeDir \"" << run << "\"\n"
      << "Listen 127.0.0.1:" << port_ << "\n";
    if (options_.tls)
        c << "Listen 127.0.0.1:" << tls_port_ << "\n";
    auto load = sys_module;
    c << load("mpm_" + options_.mpm) << load("authz_core") << load("log_config") << load("mime");
    if (options_.tls)
        c << load("socache_shmcb") << load("ssl");
    if (options_.h2)
        c << load("http2");
    if (ag)
        c << "LoadModule abortguard_module " << module_so("abortguard") << "\n";
    c << "LoadModule abortguard_test_module " << module_so("test") << "\n";
    if (running_as_root())
        c << "User www-data\nGroup www-data\n";
    c << "TypesConfig /dev/null\n"
      << "Timeout 10\nKeepAlive On\nKeepAliveTimeout 5\n"
      << "# Small numbers for a 2-core machine.\n"
      << "<IfModule mpm_prefork_module>\n"
      << "  StartServers 2\n  MinSpareServers 2\n  MaxSpareServers 4\n"
      << "  ServerLimit 16\n  MaxRequestWorkers 16\n"
      << "</IfModule>\n"
      << "<IfModule !mpm_prefork_module>\n"
      << "  StartServers 1\n  ServerLimit 2\n  ThreadLimit 8\n"
      << "  ThreadsPerChild 8\n  MinSpareThreads 4\n  MaxSpareThreads 16\n"
      << "  MaxRequestWorkers 16\n"
      << "</IfModule>\n";
    if (under_sanitizer()) {
        // Use of pool memory after its pool is gone: APR's allocators keep
        // freed pool blocks for reuse (MaxMemFree, per allocator), so such a
        // use reads stale but mapped memory and nothing notices. Debian's
        // APR takes those blocks from mmap(), not malloc(), so ASan never
        // knows them as heap memory either way; MaxMemFree 1 (KB) makes the
        // allocators unmap every freed block at once, so the use faults and
        // ASan (allow_user_segv_handler=0, see environment()) reports the
        // SEGV with the stack of the code that made it
        // (SanitizerSelfTest.PoolUseAfterFreeIsReported; without it,
        // SanitizerMaxMemFree shows the same use going unseen).
        c << "MaxMemFree 1\n";
        // Children drop root, which makes them non-dumpable, which makes
        // /proc/self/environ unreadable to them, which is where UBSan's
        // runtime (set up at its first report, in the child) reads
        // UBSAN_OPTIONS: without them it prints no stack. With a
        // CoreDumpDirectory, httpd makes its children dumpable again (no core
        // is written: ASan sets RLIMIT_CORE to 0).
        c << "CoreDumpDirectory \"" << sanitizer_dir() << "\"\n";
    }
    c << "ErrorLog \"" << run << "/error.log\"\n"
      << "LogLevel info" << (ag ? " abortguard:debug" : "") << "\n"
      << "LogFormat \"%>s %{ABORTGUARD_ABORTED}e %{ABORTGUARD_REASON}e "
         "%{AGT_START_US}e %{AGT_NOTICED_US}e %{AGT_END_US}e %D %H %U%q\" "
         "agtest\n"
      << "CustomLog \"" << run << "/access.log\" agtest\n"
      << "DocumentRoot \"" << run << "/htdocs\"\n"
      << "<Directory />\n  AllowOverride None\n  Require all granted\n"
      << "</Directory>\n";
    if (ag && options_.abortguard_on)
        c << "AbortGuard On\n";
    if (options_.h2)
        c << "Protocols h2c http/1.1\n";
    // /ready is the readiness probe: never monitored.
    c << "<Location /ready>\n  SetHandler abortguard-test\n"
      << agd("AbortGuard Off") << "</Location>\n"
      << "<Location /slow>\n  SetHandler abortguard-test\n</Location>\n"
      << "<Location /slow-ignore>\n  SetHandler abortguard-test\n"
      << agd("AbortGuardHalfClose ignore") << "</Location>\n"
      << "<Location /nomark>\n  SetHandler abortguard-test\n"
      << agd("AbortGuardMarkConnection Off") << "</Location>\n"
      << "<Location /off>\n  SetHandler abortguard-test\n"
      << agd("AbortGuard Off") << "</Location>\n"
      << "<Location /upload>\n  SetHandler abortguard-test-upload\n"
      << "</Location>\n";
    if (options_.tls) {
        c << "SSLSessionCache \"shmcb:" << run << "/ssl_scache(512000)\"\n"
          << "<VirtualHost 127.0.0.1:" << tls_port_ << ">\n"
          << "  SSLEngine on\n"
          << "  SSLCertificateFile \"" << run << "/cert.pem\"\n"
          << "  SSLCertificateKeyFile \"" << run << "/key.pem\"\n"
          << (options_.h2 ? "  Protocols http/1.1\n" : "") << "</VirtualHost>\n";
    }
    c << route_module_paths(replace_all(options_.extra_config, "@RUNDIR@", run)) << "\n";
    return c.str();
}

testing::AssertionResult Httpd::write_files() {
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
    fs::create_directories(run_dir_ + "/htdocs", ec);
    if (ec) {
        return testing::AssertionFailure() << "cannot create " << run_dir_ << ": " << ec.message();
    }
    ::chmod(run_dir_.c_str(), 0755);
    ::chmod((run_dir_ + "/htdocs").c_str(), 0755);
    if (under_sanitizer()) {
        // Written by the children too, which run as httpd's User.
        fs::create_directories(sanitizer_dir(), ec);
        ::chmod(sanitizer_dir().c_str(), 0777);
        for (const auto& m : kModules) {
            if (!fs::exists(module_so(m.name))) {
                return testing::AssertionFailure()
                       << module_so(m.name) << " is not built (make check builds it)";
            }
        }
    }
    reports_seen_.clear();
    if (running_as_root()) {
        std::string blocked = unreachable_ancestor(run_dir_);
        if (!blocked.empty()) {
            return testing::AssertionFailure()
                   << blocked << " is not searchable by www-data (httpd's User); "
                   << "put AG_TEST_WORKDIR below world-searchable directories";
        }
    }
    for (const auto& [rel, content] : options_.files) {
        fs::path p = fs::path(run_dir_) / rel;
        fs::create_directories(p.parent_path(), ec);
        ::chmod(p.parent_path().c_str(), 0755);
        if (!write_file(p.string(), content)) {
            return testing::AssertionFailure() << "cannot write " << p;
        }
        ::chmod(p.c_str(), 0644);  // readable by httpd's User whatever the umask
    }
    if (options_.tls) {
        // Self-signed, not a CA (mod_ssl warns about CA certificates), with the
        // names we connect to so mod_ssl does not warn about a mismatch either.
        CommandResult r = run_command(
            {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-days", "2", "-keyout", run_dir_ + "/key.pem", "-out", run_dir_ + "/cert.pem",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext",
             "basicConstraints=critical,CA:FALSE"},
            Millis(30000));
        if (r.exit_code != 0) {
            return testing::AssertionFailure() << "openssl failed:\n" << r.output;
        }
    }
    return testing::AssertionSuccess();
}

testing::AssertionResult Httpd::prepare() {
    port_ = pick_free_port();
    tls_port_ = options_.tls ? pick_free_port() : 0;
    auto files = write_files();
    if (!files)
        return files;
    if (!write_file(conf_path(), config_text())) {
        return testing::AssertionFailure() << "cannot write " << conf_path();
    }
    return testing::AssertionSuccess();
}

CommandResult Httpd::check_syntax() const {
    return run_command({AG_HTTPD_BIN, "-t", "-f", conf_path()}, Millis(20000), environment());
}

CommandResult syntax_check(const std::string& extra) {
    static std::atomic<int> n{0};
    HttpdOptions o;
    o.name = "syntax-" + std::to_string(++n);
    o.extra_config = extra;
    Httpd httpd(o);
    auto prepared = httpd.prepare();
    EXPECT_TRUE(prepared) << prepared.message();
    return httpd.check_syntax();
}

bool Httpd::answers() const {
    RawClient probe;
    if (!probe.connect(port_, Millis(500)))
        return false;
    if (!probe.send(http_get("/ready?ms=0", "Connection: close\r\n"), Millis(1000))) {
        return false;
    }
    auto response = probe.read_response(Millis(2000));
    return response && response->status == 200 && response->body == "done\n";
}

bool Httpd::reap(Millis timeout) {
    Deadline deadline(timeout);
    for (;;) {
        pid_t r = ::waitpid(pid_, nullptr, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD))
            return true;
        if (deadline.expired())
            return false;
        std::this_thread::sleep_for(kPollInterval);
    }
}

Httpd::Launch Httpd::launch(std::string* why) {
    // Everything the child needs, built before fork (the test may have
    // threads, so the child should not allocate).
    const std::string out_path = stdout_path();
    const std::string conf = conf_path();
    const std::vector<std::string> env = environment();
    std::vector<char*> envp;
    for (const auto& e : env)
        envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const char* argv[] = {AG_HTTPD_BIN, "-f", conf.c_str(), "-DFOREGROUND", nullptr};
    pid_t pid = ::fork();
    if (pid == 0) {
        // Own process group, so stop() can kill children left behind; and if
        // the test binary dies, httpd gets SIGTERM instead of living on.
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execve(AG_HTTPD_BIN, const_cast<char**>(argv), envp.data());
        _exit(127);
    }
    if (pid < 0) {
        *why = "fork failed";
        return Launch::kFailed;
    }
    ::setpgid(pid, pid);
    pid_ = pid;
    Deadline deadline(kStartTimeout);
    while (!deadline.expired()) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            pid_ = -1;
            std::string logs = read_file(stdout_path()) + read_file(error_log_path());
            *why = "httpd exited during start-up:\n" + logs;
            bool bind = logs.find("could not bind") != std::string::npos ||
                        logs.find("Address already in use") != std::string::npos;
            return bind ? Launch::kBindFailed : Launch::kFailed;
        }
        if (answers())
            return Launch::kReady;
        std::this_thread::sleep_for(kPollInterval);
    }
    stop();
    *why = "httpd did not answer within 10 s:\n" + read_file(stdout_path()) +
           read_file(error_log_path());
    return Launch::kFailed;
}

testing::AssertionResult Httpd::start() {
    std::string why;
    for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
        auto prepared = prepare();
        if (!prepared)
            return prepared;
        tail_watch_.start(error_log_path());  // empty file: watch from its start
        stderr_cursor_.start_at(stdout_path(), 0);
        error_log_scan_.start_at(error_log_path(), 0);
        switch (launch(&why)) {
            case Launch::kReady:
                return testing::AssertionSuccess();
            case Launch::kBindFailed:
                continue;  // the port was taken meanwhile; try new ones
            case Launch::kFailed:
                return testing::AssertionFailure() << options_.name << ": " << why;
        }
    }
    return testing::AssertionFailure() << options_.name << ": no free port after " << kStartAttempts
                                       << " attempts; last: " << why;
}

// httpd 2.4's event MPM (seen in 2.4.71) can crash a child that receives
// SIGTERM while one of its workers is closing a connection: the child's main
// thread closes every worker's socket, reading one from a connection pool the
// worker has just destroyed (close_worker_sockets(); apr_os_sock_get() on
// freed memory; about 1 in 300 stops right after a request, the same with
// and without this module). Stopping once the server has finished closing its
// connections keeps that httpd bug out of the error-log check, which must
// keep failing on crashes of our own. Bounded: a test may stop httpd while a
// hung handler still holds a half-closed connection. The worker frees the
// pool just after its close(), with nothing to see from outside, hence the
// short settle after the last closing socket; a connection the client reset
// leaves no entry to wait for, so this narrows the window, it cannot shut it.
//
// Prefork has its own form of it: a child's SIGTERM handler (just_die ->
// clean_child_exit) destroys the child's pools inside the signal handler,
// whatever the interrupted main thread was doing. A child still reading an
// HTTP/2 connection its client has just closed then runs mod_http2's pool
// cleanups on a session the same teardown has already freed: under ASan with
// MaxMemFree 1, a SEGV inside mod_http2.so, called from apr_pool_destroy in
// the signal frame (LifecycleTest.StopNoticeReachesHttp2AndTlsLongPolls
// under prefork: 6 of 6 runs at eed60f3 on a Debian 12 machine with
// 2.4.71-1~deb12u1; this module's filters appear only on the interrupted
// stack). The same wait keeps it out of the tests.
void Httpd::let_closing_connections_finish() {
    std::vector<int> ports{port_};
    if (tls_port_ > 0)
        ports.push_back(tls_port_);
    bool seen = false;
    for (Deadline deadline(Millis(1000)); !deadline.expired();) {
        if (closing_sockets_on(ports) == 0)
            break;
        seen = true;
        std::this_thread::sleep_for(Millis(2));
    }
    if (seen)
        std::this_thread::sleep_for(Millis(20));  // see above: not a synchronisation
}

testing::AssertionResult Httpd::stop() {
    std::vector<std::string> reports;
    auto stopped = stop(&reports);
    if (reports.empty())
        return stopped;
    return testing::AssertionFailure()
           << (stopped ? options_.name + ": " : std::string(stopped.message()) + "\n")
           << "sanitizer reports:\n"
           << join_lines(reports);
}

testing::AssertionResult Httpd::stop(std::vector<std::string>* reports) {
    if (pid_ <= 0) {
        *reports = sanitizer_reports();
        return testing::AssertionSuccess();
    }
    std::string trouble;
    pid_t group = pid_;
    if (options_.mpm == "event" || options_.mpm == "prefork")
        let_closing_connections_finish();
    ::kill(pid_, SIGTERM);
    if (!reap(kStopTimeout)) {
        trouble += "httpd ignored SIGTERM for 10 s; killed. ";
        ::kill(-group, SIGKILL);
        reap(Millis(5000));
    }
    pid_ = -1;
    // Children must be gone too (the process group is empty).
    Deadline deadline(Millis(5000));
    while (::kill(-group, 0) == 0 && !deadline.expired()) {
        std::this_thread::sleep_for(kPollInterval);
    }
    if (::kill(-group, 0) == 0) {
        trouble += "httpd children outlived the parent; killed. ";
        ::kill(-group, SIGKILL);
    }
    auto problems = unchecked_problems();
    if (!problems.empty()) {
        trouble += "error log problems at shutdown:\n" + join_lines(problems);
    }
    *reports = sanitizer_reports();
    if (trouble.empty())
        return testing::AssertionSuccess();
    return testing::AssertionFailure() << options_.name << ": " << trouble;
}

testing::AssertionResult Httpd::graceful() {
    if (pid_ <= 0)
        return testing::AssertionFailure() << "httpd is not running";
    // The parent logs this once per generation it starts (AH00163/AH00292).
    auto generations = [this] {
        size_t n = 0;
        LogCursor all;
        all.start_at(error_log_path(), 0);
        for (const auto& line : all.new_lines())
            n += line.find("resuming normal operations") != std::string::npos;
        return n;
    };
    const size_t before = generations();
    ::kill(pid_, SIGUSR1);
    Deadline deadline(kStartTimeout);
    while (generations() <= before) {
        if (deadline.expired())
            return testing::AssertionFailure() << "no new generation within 10 s";
        std::this_thread::sleep_for(kPollInterval);
    }
    while (!answers()) {
        if (deadline.expired())
            return testing::AssertionFailure() << "no answer after the graceful restart";
        std::this_thread::sleep_for(kPollInterval);
    }
    return testing::AssertionSuccess();
}

std::vector<std::string> Httpd::unchecked_problems() {
    off_t checked_to = 0;
    for (const auto& pattern : options_.tolerated_log_lines)
        tail_watch_.expect(pattern);
    auto problems = tail_watch_.problems(&checked_to);
    mark_checked(checked_to);
    return problems;
}

// ---------------------------------------------------------------------- pool

Httpd* HttpdPool::get(const std::string& mpm) {
    auto it = servers_.find(mpm);
    if (it != servers_.end()) {
        if (!it->second)
            ADD_FAILURE() << "httpd (" << mpm << ") failed earlier";
        return it->second.get();
    }
    auto httpd = std::make_unique<Httpd>(factory_(mpm));
    auto started = httpd->start();
    if (!started) {
        ADD_FAILURE() << started.message();
        httpd.reset();
    }
    return (servers_[mpm] = std::move(httpd)).get();
}

void HttpdPool::stop_all() {
    for (auto& [mpm, httpd] : servers_) {
        if (!httpd)
            continue;
        auto stopped = httpd->stop();
        if (!stopped)
            ADD_FAILURE() << stopped.message();
    }
    servers_.clear();
}

std::vector<std::string> all_mpms() {
    static const std::vector<std::string> known{"event", "worker", "prefork"};
    const char* env = std::getenv("AG_TEST_MPMS");
    if (env == nullptr || *env == '\0')
        return known;
    std::vector<std::string> mpms;
    std::string list = env;
    std::replace(list.begin(), list.end(), ',', ' ');
    std::istringstream words(list);
    for (std::string mpm; words >> mpm;) {
        if (std::find(known.begin(), known.end(), mpm) == known.end())
            bad_environment("AG_TEST_MPMS names an unknown MPM: " + mpm);
        if (std::find(mpms.begin(), mpms.end(), mpm) == mpms.end())
            mpms.push_back(mpm);
    }
    if (mpms.empty())
        bad_environment(std::string("AG_TEST_MPMS names no MPM: '") + env + "'");
    return mpms;
}

std::string mpm_param_name(const testing::TestParamInfo<std::string>& info) {
    return info.param;
}

// ------------------------------------------------------------------- fixture

void HttpdTest::SetUp() {
    httpd_ = pool().get(mpm());
    ASSERT_NE(httpd_, nullptr) << "no httpd for mpm " << mpm();
    // Problems since the previous test's check (or since start-up).
    auto earlier = httpd_->unchecked_problems();
    EXPECT_TRUE(earlier.empty()) << "error log problems before this test began:\n"
                                 << join_lines(earlier);
    // A report the previous test's check did not see yet (written after it).
    auto reports = httpd_->sanitizer_reports();
    EXPECT_TRUE(reports.empty()) << "sanitizer reports before this test began "
                                 << "(probably from the previous test on this httpd):\n"
                                 << join_lines(reports);
    access_.start(httpd_->access_log_path());
    errors_.start(httpd_->error_log_path());
    for (const auto& pattern : httpd_->options().tolerated_log_lines)
        errors_.expect(pattern);
}

void HttpdTest::TearDown() {
    if (!httpd_)
        return;
    off_t checked_to = 0;
    auto problems = errors_.problems(&checked_to);
    EXPECT_TRUE(problems.empty()) << "unexpected error log lines:\n" << join_lines(problems);
    // What this test checked (with its expectations) is not checked again;
    // anything later is checked before the next test or at shutdown.
    httpd_->mark_checked(checked_to);
    auto reports = httpd_->sanitizer_reports();
    EXPECT_TRUE(reports.empty()) << "sanitizer reports:\n" << join_lines(reports);
}

AccessLine HttpdTest::await(const std::string& tag) {
    auto line = access_.wait_for(tag, Millis(10000));
    EXPECT_TRUE(line) << "no access log line for " << tag;
    return line.value_or(AccessLine{});
}

RawClient HttpdTest::connect() {
    RawClient client;
    EXPECT_TRUE(client.connect(httpd_->port())) << "cannot connect to 127.0.0.1:" << httpd_->port();
    return client;
}

std::string HttpdTest::base_url() const {
    return "http://127.0.0.1:" + std::to_string(httpd_->port());
}

std::string HttpdTest::tls_base_url() const {
    return "https://127.0.0.1:" + std::to_string(httpd_->tls_port());
}

}  // namespace agtest
