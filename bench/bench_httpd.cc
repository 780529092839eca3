// Benchmarks against a real httpd (the integration tests' harness), side by
// side with peers in one run, with the same clients:
//  (a) abort detection latency with 1, 100 and 1,000 concurrent held
//      requests, handlers waiting on the token and handlers polling, beside
//      Go's net/http request context (bench/agpeer.go);
//  (b) proxy propagation (client close -> the backend sees the close),
//      httpd + mod_abortguard beside nginx in front of the same Go backend,
//      and where the time goes (perf, when available);
//  (c) the refresh storm's goodput: stock httpd, nginx, httpd + module;
//  (d) HTTP/2 over TLS: a stream reset -> the waiting handler's wake-up,
//      beside mod_http2's own flag;
//  (e) keep-alive throughput while clients abort slow requests, stock
//      httpd vs the module;
// plus memory per monitored request and throughput On / Off / not loaded.
// Contenders alternate within each round, in an order that rotates.
//
// Prints markdown (bench/run puts it into RESULTS.md), writes the raw
// latencies to DATA_DIR for the plots and the summary of ratios to
// DATA_DIR/summary.md.
// Usage: bench_httpd [--smoke] [--mpm event|worker] [--data DATA_DIR]
//                    [--peer AGPEER] [--nginx NGINX] [--no-perf]
//                    [--only detection|proxy|storm|h2|kastorm|throughput]...
//                    [--held N]...
// Without --peer (or with a missing binary) the Go peer's parts say so and
// are skipped; the same for nginx (searched in PATH, /usr/sbin).
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "peers.h"

#ifndef AG_BENCH_MODULE_SO
#error "AG_BENCH_MODULE_SO must be defined (the built mod_abortguard_bench.so)"
#endif

namespace agtest {
namespace {

struct Settings {
    bool smoke = false;
    std::string mpm = "event";
    std::string data_dir;
    std::set<std::string> only;  // these parts alone (empty: all)
    std::vector<int> held;       // detection: these levels instead of 1, 100, 1000
    std::string peer;            // bench/agpeer ("" or missing: Go's parts skipped)
    std::string nginx;           // nginx binary ("" or missing: nginx's parts skipped)
    bool perf = true;            // the proxy breakdown with perf, when root has it
    int h2_trials = 0;           // (d): this many resets instead of the default
    bool part(const std::string& p) const { return only.empty() || only.count(p) != 0; }
    bool have_peer() const { return !peer.empty() && ::access(peer.c_str(), X_OK) == 0; }
    bool have_nginx() const { return !nginx.empty(); }
};

std::string work_dir(const std::string& name) {
    return std::string(AG_TEST_WORKDIR) + "/" + name;
}

// ------------------------------------------------------------------ config

std::string bench_config(int workers) {
    const int per_child = workers > 256 ? 256 : workers;
    const int children = (workers + per_child - 1) / per_child;
    std::ostringstream c;
    c << "LoadModule abortguard_bench_module " << AG_BENCH_MODULE_SO << "\n"
      << "<IfModule !mpm_prefork_module>\n"
      << "  ServerLimit " << children + 1 << "\n  StartServers " << children << "\n"
      << "  ThreadLimit " << per_child << "\n  ThreadsPerChild " << per_child << "\n"
      << "  MaxRequestWorkers " << children * per_child << "\n"
      << "  MinSpareThreads 1\n  MaxSpareThreads " << children * per_child << "\n</IfModule>\n"
      << "<IfModule mpm_prefork_module>\n"
      << "  ServerLimit " << workers << "\n  StartServers " << workers << "\n"
      << "  MinSpareServers " << workers << "\n  MaxSpareServers " << workers << "\n"
      << "  MaxRequestWorkers " << workers << "\n</IfModule>\n"
      << "ListenBacklog 4096\n"
      // As in production: the harness's abortguard:debug writes a line per
      // abort from the monitor thread.
      << "LogLevel warn\n"
      << "<Location /bench>\n  SetHandler abortguard-bench\n</Location>\n"
      << "<Location /tiny>\n  SetHandler abortguard-bench\n</Location>\n"
      << "CustomLog \"@RUNDIR@/bench.log\" \"%{AGB_START_US}e %{AGB_DETECTED_US}e "
         "%{AGB_NOTICED_US}e %U%q %{AGB_FLAG_US}e\"\n";
    return c.str();
}

// ------------------------------------------------------------------ figures

struct Summary {
    size_t n = 0;
    double min = 0, median = 0, p99 = 0, max = 0;
};

Summary summarize(std::vector<double> v) {
    Summary s;
    s.n = v.size();
    if (v.empty())
        return s;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
    };
    s.min = v.front();
    s.median = at(0.5);
    s.p99 = at(0.99);
    s.max = v.back();
    return s;
}

std::string fmt_ms(const Summary& s) {
    if (s.n == 0)
        return "- | - | - | -";
    char buf[128];
    std::snprintf(buf, sizeof buf, "%.3f | %.3f | %.3f | %.3f", s.min / 1000, s.median / 1000,
                  s.p99 / 1000, s.max / 1000);
    return buf;
}

void write_data(const Settings& st, const std::string& name, const std::vector<double>& v) {
    if (st.data_dir.empty())
        return;
    std::ofstream out(st.data_dir + "/" + name);
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i)
        out << sorted[i] / 1000 << " " << static_cast<double>(i + 1) / sorted.size() << "\n";
}

// Resident memory of httpd and all its children (its process group), bytes.
long group_rss_bytes(const Httpd& h) {
    std::ifstream pidfile(h.run_dir() + "/httpd.pid");
    long pgrp = 0;
    pidfile >> pgrp;
    long total = 0;
    DIR* proc = opendir("/proc");
    for (dirent* e; proc && (e = readdir(proc)) != nullptr;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        std::ifstream stat(std::string("/proc/") + e->d_name + "/stat");
        std::string line;
        std::getline(stat, line);
        const size_t paren = line.rfind(')');
        if (paren == std::string::npos)
            continue;
        std::istringstream rest(line.substr(paren + 2));
        std::string state;
        long ppid = 0, group = 0;
        rest >> state >> ppid >> group;
        if (group != pgrp)
            continue;
        std::ifstream status(std::string("/proc/") + e->d_name + "/status");
        for (std::string l; std::getline(status, l);) {
            if (l.rfind("VmRSS:", 0) == 0)
                total += std::atol(l.c_str() + 6) * 1024;
        }
    }
    if (proc)
        closedir(proc);
    return total;
}

// The q-quantile of v (sorted here), 0 when empty.
double quantile(std::vector<double> v, double q) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

double median(std::vector<double> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

std::string f3(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.3f", v);
    return b;
}

std::string f2(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

// "a/b" as a ratio, "-" when b is 0.
std::string ratio(double a, double b) {
    return b > 0 ? f2(a / b) : "-";
}

// "lo-hi" of a statistic over batches (each a vector of samples).
std::string spread(const std::vector<std::vector<double>>& batches, double q, double scale = 1000) {
    double lo = 1e300, hi = -1e300;
    for (const auto& b : batches) {
        if (b.empty())
            continue;
        const double v = quantile(b, q) / scale;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
    }
    if (lo > hi)
        return "-";
    return f3(lo) + "-" + f3(hi);
}

// Splits per-round samples into at most `n` batches of consecutive rounds.
std::vector<std::vector<double>> batches_of(const std::vector<std::vector<double>>& rounds,
                                            size_t n) {
    std::vector<std::vector<double>> out;
    if (rounds.empty())
        return out;
    n = std::min(n, rounds.size());
    out.resize(n);
    for (size_t i = 0; i < rounds.size(); ++i) {
        auto& b = out[i * n / rounds.size()];
        b.insert(b.end(), rounds[i].begin(), rounds[i].end());
    }
    return out;
}

// The summary of ratios (DATA_DIR/summary.md, put at the top of RESULTS.md).
std::vector<std::string>& summary_rows() {
    static std::vector<std::string> rows;
    return rows;
}

void summary(const std::string& measure, const std::string& module, const std::string& peer,
             const std::string& ratio_text, const std::string& target) {
    summary_rows().push_back("| " + measure + " | " + module + " | " + peer + " | " + ratio_text +
                             " | " + target + " |");
}

void write_summary(const Settings& st) {
    if (st.data_dir.empty())
        return;
    std::ofstream out(st.data_dir + "/summary.md");
    out << "| Measure | httpd + mod_abortguard | Peer | Ratio (module / peer) | Target: verdict |\n"
        << "|---|---|---|---|---|\n";
    for (const auto& r : summary_rows())
        out << r << "\n";
}

// A data file for the plots (DATA_DIR/name).
void write_lines(const Settings& st, const std::string& name, const std::string& text) {
    if (st.data_dir.empty())
        return;
    std::ofstream out(st.data_dir + "/" + name);
    out << text;
}

// The keys of a "word key=value key=value" line.
std::map<std::string, double> key_values(const std::string& line) {
    std::map<std::string, double> kv;
    std::istringstream in(line);
    for (std::string w; in >> w;) {
        const size_t eq = w.find('=');
        if (eq != std::string::npos)
            kv[w.substr(0, eq)] = std::atof(w.c_str() + eq + 1);
    }
    return kv;
}

// ---------------------------------------------------------------- detection

// A server the held rounds run against: httpd with the bench handler, or
// Go's net/http (agpeer detect), which serves the same URLs and logs the
// same fields.
struct Target {
    std::string name;
    int port = 0;
    std::string log_path;          // "START DETECTED NOTICED URL ..." per request
    const Httpd* httpd = nullptr;  // for the resident memory (httpd only)
};

struct Round {
    int aborted = 0, detected = 0, noticed = 0;
    std::vector<double> detected_us, noticed_us;  // after the client's close
    // From the close's timestamp to the close returning: how long the client
    // itself was held up there (its timestamps are that much early at most).
    std::vector<double> stall_us;
    long rss_held = 0;  // while all were held
};

// `conc` requests held at once on `path`, then every client closes (FIN)
// in one sweep; reads the handler's timings back from the target's log. The
// handlers block in abortguard_wait() (Go: on ctx.Done()) if `wait`, else
// poll c->aborted (Go: ctx.Err()) every `poll_us`.
Round held_round(const Target& t, const std::string& path, int conc, int hold_ms, int poll_us,
                 bool wait = false) {
    static int round_no = 0;
    const std::string prefix = "r" + std::to_string(++round_no) + "x";
    LogCursor log;
    log.start(t.log_path);
    std::vector<RawClient> clients(static_cast<size_t>(conc));
    Round r;
    for (int i = 0; i < conc; ++i) {
        if (!clients[i].connect(t.port, Millis(10000)) ||
            !clients[i].send(http_get(
                path + "?hold=" + std::to_string(hold_ms) + "&poll_us=" + std::to_string(poll_us) +
                (wait ? "&wait=1" : "") + "&t=" + prefix + std::to_string(i) + "z")))
            std::fprintf(stderr, "bench: request %d did not go out\n", i);
    }
    for (auto& c : clients) {
        if (!c.read_until("started\n", Millis(30000)))
            std::fprintf(stderr, "bench: a held request did not start\n");
    }
    std::this_thread::sleep_for(Millis(conc > 100 ? 500 : conc > 1 ? 50 : 10));
    if (t.httpd)
        r.rss_held = group_rss_bytes(*t.httpd);
    std::vector<int64_t> closed(static_cast<size_t>(conc));
    for (int i = 0; i < conc; ++i) {
        clients[i].close_fin();
        closed[i] = clients[i].close_us();  // taken right before the FIN
        r.stall_us.push_back(static_cast<double>(monotonic_us() - closed[i]));
    }
    r.aborted = conc;
    std::map<int, std::vector<std::string>> found;
    Deadline deadline(Millis(hold_ms + 30000));
    while (static_cast<int>(found.size()) < conc && !deadline.expired()) {
        std::this_thread::sleep_for(Millis(conc > 10 ? 20 : 3));
        found.clear();
        for (const auto& line : log.new_lines()) {
            std::istringstream in(line);
            std::vector<std::string> f(4);
            in >> f[0] >> f[1] >> f[2] >> f[3];
            const size_t tp = f[3].find("&t=" + prefix);
            if (tp != std::string::npos)
                found[std::atoi(f[3].c_str() + tp + 3 + prefix.size())] = f;
        }
    }
    for (const auto& [i, f] : found) {
        if (f[1] != "-") {
            ++r.detected;
            r.detected_us.push_back(static_cast<double>(std::atoll(f[1].c_str()) - closed[i]));
        }
        if (f[2] != "-") {
            ++r.noticed;
            r.noticed_us.push_back(static_cast<double>(std::atoll(f[2].c_str()) - closed[i]));
        }
    }
    return r;
}

// One row of the detection table: `conc` requests held at once by
// handlers of one kind, over several rounds.
struct Level {
    int conc;
    bool wait;    // handlers block in abortguard_wait(); else they poll
    int poll_us;  // the poll's period
    int rounds;
};

// All rounds of one target at one level.
struct Rounds {
    Round all;
    std::vector<std::vector<double>> noticed_per_round;
    long rss_sum = 0;
    void add(const Round& r) {
        all.aborted += r.aborted;
        all.detected += r.detected;
        all.noticed += r.noticed;
        all.detected_us.insert(all.detected_us.end(), r.detected_us.begin(), r.detected_us.end());
        all.noticed_us.insert(all.noticed_us.end(), r.noticed_us.begin(), r.noticed_us.end());
        all.stall_us.insert(all.stall_us.end(), r.stall_us.begin(), r.stall_us.end());
        noticed_per_round.push_back(r.noticed_us);
        rss_sum += r.rss_held;
    }
};

std::vector<Level> detection_levels(bool smoke, std::vector<int> held) {
    if (held.empty())
        held = smoke ? std::vector<int>{1, 10} : std::vector<int>{1, 100, 1000};
    std::vector<Level> out;
    for (int conc : held) {
        // Enough samples at low concurrency: repeat the round.
        const int rounds = conc == 1 ? (smoke ? 3 : 100) : conc < 1000 ? (smoke ? 1 : 5) : 3;
        // 1,000 threads polling every ms would be the whole load of 2 cores.
        const int poll_us = conc >= 1000 ? 10000 : 1000;
        out.push_back({conc, true, poll_us, rounds});
        out.push_back({conc, false, poll_us, rounds});
    }
    return out;
}

void detection(const Settings& st) {
    const std::vector<Level> levels = detection_levels(st.smoke, st.held);
    int top = 0;
    for (const Level& l : levels)
        top = std::max(top, l.conc);
    HttpdOptions o;
    o.name = "bench-detect-" + st.mpm;
    o.mpm = st.mpm;
    o.extra_config = bench_config(top + 32) +
                     "<Location /bench-off>\n  SetHandler abortguard-bench\n  AbortGuard Off\n"
                     "</Location>\n";
    Httpd h(o);
    auto started = h.start();
    if (!started) {
        std::printf("httpd did not start: %s\n", started.message());
        return;
    }
    std::vector<Target> targets = {{"mod_abortguard", h.port(), h.run_dir() + "/bench.log", &h}};
    agbench::Agpeer go(st.peer, work_dir("bench-go-detect"));
    if (st.have_peer()) {
        if (go.start("detect"))
            targets.push_back({"Go net/http", go.port(), go.log_path(), nullptr});
        else
            std::printf("Note: the Go peer did not start (%s); Go's rows are missing.\n\n",
                        go.log_path().c_str());
    }
    std::printf(
        "### (a) Detection latency: mod_abortguard beside Go's request context (%s MPM)\n\n",
        st.mpm.c_str());
    if (!st.have_peer())
        std::printf(
            "Go peer skipped: bench/agpeer is not built (bench/run builds it with "
            "Debian's golang-go).\n\n");
    std::printf(
        "Client close (FIN) -> the server detected the abort, and -> the handler noticed it. "
        "httpd: detected = the request's token reads aborted (`abortguard_aborted_at()`); the "
        "handler blocks in `abortguard_wait()` (woken by the token) or polls `c->aborted` as "
        "handlers written before this module do. Go (`net/http`, GOMAXPROCS = %u cores): "
        "detected = a goroutine waiting on the request's `ctx.Done()` woke (Go keeps no cancel "
        "timestamp); the handler waits on `ctx.Done()` or polls `ctx.Err()`. The same raw-socket "
        "clients for both, which alternate round by round. Times in ms, all on "
        "`CLOCK_MONOTONIC`. The client takes its timestamp right before each close; \"client "
        "stall\" is how long that close took to return. \"p99 spread\": the lowest and highest "
        "p99 over up to 5 batches of consecutive rounds.\n\n",
        std::thread::hardware_concurrency());
    std::printf(
        "| Held at once | Handler | Server | Noticed / aborted | Detected: median | p99 "
        "| Handler noticed: min | median | p99 | max | p99 spread | Client stall: p99 / max |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    long mem_on = 0, mem_off = 0;
    const int off_hold = top >= 1000 ? 4000 : 1000;
    struct Compared {
        Level level;
        std::vector<Rounds> per_target;
    };
    std::vector<Compared> compared;
    for (const Level& l : levels) {
        const bool measure_memory = l.conc == top && l.wait;
        if (measure_memory)
            mem_off += held_round(targets[0], "/bench-off", top, off_hold, 10000).rss_held;
        std::vector<Rounds> per(targets.size());
        for (int k = 0; k < l.rounds; ++k) {
            for (size_t j = 0; j < targets.size(); ++j) {
                const size_t i = (j + static_cast<size_t>(k)) % targets.size();
                per[i].add(held_round(targets[i], "/bench", l.conc, 30000, l.poll_us, l.wait));
            }
        }
        if (measure_memory) {
            mem_on = per[0].rss_sum / l.rounds;
            mem_off =
                (mem_off + held_round(targets[0], "/bench-off", top, off_hold, 10000).rss_held) / 2;
        }
        for (size_t i = 0; i < targets.size(); ++i) {
            const Round& all = per[i].all;
            const bool is_go = i > 0;
            const std::string kind =
                l.wait ? (is_go ? "waits on `ctx.Done()`" : "waits in `abortguard_wait()`")
                       : (is_go ? "polls `ctx.Err()`" : "polls `c->aborted`") +
                             std::string(" every ") + std::to_string(l.poll_us / 1000) + " ms";
            const Summary det = summarize(all.detected_us);
            const Summary stall = summarize(all.stall_us);
            std::printf("| %d | %s | %s | %d / %d | %.3f | %.3f | %s | %s | %.3f / %.3f |\n",
                        l.conc, kind.c_str(), targets[i].name.c_str(), all.noticed, all.aborted,
                        det.median / 1000, det.p99 / 1000,
                        fmt_ms(summarize(all.noticed_us)).c_str(),
                        spread(batches_of(per[i].noticed_per_round, 5), 0.99).c_str(),
                        stall.p99 / 1000, stall.max / 1000);
            const std::string suffix =
                std::to_string(l.conc) + (l.wait ? "_wait" : "_poll") + ".dat";
            if (!is_go) {
                write_data(st, "detected_" + suffix, all.detected_us);
                write_data(st, "noticed_" + suffix, all.noticed_us);
            } else {
                write_data(st, "go_noticed_" + suffix, all.noticed_us);
            }
        }
        std::fflush(stdout);
        compared.push_back({l, std::move(per)});
    }
    std::printf("\n");
    if (targets.size() > 1) {
        std::printf(
            "Ratios, mod_abortguard / Go (the handler noticed; below 1: the module is faster), "
            "pooled over all rounds, and each server's p99 spread over batches:\n\n"
            "| Held at once | Handler | median: module / Go | p99: module / Go | p99 spread (ms): "
            "module | Go |\n|---|---|---|---|---|---|\n");
        for (const auto& c : compared) {
            const Summary m = summarize(c.per_target[0].all.noticed_us);
            const Summary g = summarize(c.per_target[1].all.noticed_us);
            const std::string kind =
                c.level.wait ? "waits"
                             : "polls every " + std::to_string(c.level.poll_us / 1000) + " ms";
            std::printf("| %d | %s | %.3f / %.3f = **%s** | %.3f / %.3f = **%s** | %s | %s |\n",
                        c.level.conc, kind.c_str(), m.median / 1000, g.median / 1000,
                        ratio(m.median, g.median).c_str(), m.p99 / 1000, g.p99 / 1000,
                        ratio(m.p99, g.p99).c_str(),
                        spread(batches_of(c.per_target[0].noticed_per_round, 5), 0.99).c_str(),
                        spread(batches_of(c.per_target[1].noticed_per_round, 5), 0.99).c_str());
            const bool lost_any = m.n < static_cast<size_t>(c.per_target[0].all.aborted);
            const std::string target =
                c.level.conc == 100 ? std::string("p99 <= Go: ") +
                                          (m.p99 <= g.p99 && !lost_any ? "met" : "**missed**")
                                    : "";
            summary("(a) detection, " + std::to_string(c.level.conc) + " aborts at once, handler " +
                        kind + ": noticed p50 / p99 ms",
                    f3(m.median / 1000) + " / " + f3(m.p99 / 1000),
                    "Go ctx: " + f3(g.median / 1000) + " / " + f3(g.p99 / 1000),
                    ratio(m.median, g.median) + " / " + ratio(m.p99, g.p99), target);
        }
        std::printf("\n");
    }
    const double per = static_cast<double>(mem_on - mem_off) / top;
    std::printf(
        "Memory per monitored request (resident memory of all httpd processes with %d requests "
        "held under `AbortGuard On`, minus the same under `AbortGuard Off` (measured before and "
        "after), divided by %d): "
        "**%.0f bytes** (page-granular, so noisy at small counts).\n\n",
        top, top, per);
    go.stop();
    auto stopped = h.stop();
    if (!stopped)
        std::printf("Note: %s\n\n", stopped.message());
}

// ------------------------------------------------------ proxies: (b) and (c)

// A reverse proxy in front of the Go backend: /px/ -> the backend's /.
struct Front {
    std::string name;
    std::unique_ptr<Httpd> httpd;
    std::unique_ptr<agbench::Nginx> nginx;
    int port() const { return httpd ? httpd->port() : nginx ? nginx->port() : 0; }
    void stop() {
        if (httpd) {
            // Stock httpd's mod_proxy logs client aborts at error level
            // (AH01102 ...): expected here, not a bench failure.
            auto stopped = httpd->stop();
            if (!stopped)
                std::fprintf(stderr, "bench: %s: %s\n", name.c_str(), stopped.message());
        }
        if (nginx)
            nginx->stop();
    }
};

enum class FrontKind { kStock, kModule, kNginx };

std::unique_ptr<Front> start_front(const Settings& st, FrontKind kind, int backend_port,
                                   std::string* why) {
    auto f = std::make_unique<Front>();
    if (kind == FrontKind::kNginx) {
        f->name = "nginx";
        f->nginx = std::make_unique<agbench::Nginx>(st.nginx, work_dir("bench-nginx"));
        if (!f->nginx->start(backend_port)) {
            *why = f->nginx->error();
            return nullptr;
        }
        return f;
    }
    const bool module = kind == FrontKind::kModule;
    f->name = module ? "httpd + mod_abortguard" : "stock httpd";
    HttpdOptions o;
    o.name = std::string("bench-front-") + (module ? "ag-" : "stock-") + st.mpm;
    o.mpm = st.mpm;
    o.load_abortguard = module;
    o.abortguard_on = module;
    o.extra_config = sys_module("proxy") + sys_module("proxy_http") + bench_config(128) +
                     "ProxyPass /px/ http://127.0.0.1:" + std::to_string(backend_port) + "/\n" +
                     (module ? "AbortGuardProxy On\n" : "");
    f->httpd = std::make_unique<Httpd>(o);
    auto started = f->httpd->start();
    if (!started) {
        *why = started.message();
        return nullptr;
    }
    return f;
}

struct PropRound {
    int n = 0, seen = 0;
    std::vector<double> us;        // client close -> backend saw the close
    std::vector<int64_t> closed;   // the clients' close times
    std::vector<int64_t> seen_at;  // the backend's times (0: never)
};

// `conc` requests through the proxy to the backend's /hold; the clients
// close once every request is at the backend (streaming: the first body
// bytes arrived; pre: the backend holds them all before its status line).
PropRound prop_round(const Front& f, agbench::Agpeer& backend, int conc, bool pre, int hold_ms) {
    static int round_no = 0;
    const std::string prefix = "p" + std::to_string(++round_no) + "x";
    LogCursor log;
    log.start(backend.log_path());
    PropRound r;
    r.n = conc;
    std::vector<RawClient> clients(static_cast<size_t>(conc));
    for (int i = 0; i < conc; ++i) {
        if (!clients[i].connect(f.port(), Millis(5000)) ||
            !clients[i].send(http_get("/px/hold?ms=" + std::to_string(hold_ms) +
                                      (pre ? "&pre=1" : "") + "&t=" + prefix + std::to_string(i) +
                                      "z")))
            std::fprintf(stderr, "bench: proxied request %d did not go out\n", i);
    }
    if (!pre) {
        for (auto& c : clients)
            if (!c.read_until("started\n", Millis(10000)))
                std::fprintf(stderr, "bench: a proxied request did not start\n");
    } else {
        Deadline d(Millis(10000));
        while (!d.expired()) {
            std::istringstream in(agbench::http_body(backend.port(), "/idle"));
            int busy = 0, holds = 0;
            in >> busy >> holds;
            if (holds >= conc)
                break;
            std::this_thread::sleep_for(Millis(5));
        }
    }
    std::this_thread::sleep_for(Millis(30));
    r.closed.resize(static_cast<size_t>(conc));
    for (int i = 0; i < conc; ++i) {
        clients[i].close_fin();
        r.closed[i] = clients[i].close_us();
    }
    std::map<int, int64_t> found;
    Deadline deadline(Millis(hold_ms + 5000));
    while (static_cast<int>(found.size()) < conc && !deadline.expired()) {
        std::this_thread::sleep_for(Millis(5));
        for (const auto& line : log.new_lines()) {
            std::istringstream in(line);
            std::string tag, start, closed;
            in >> tag >> start >> closed;
            if (tag.rfind(prefix, 0) == 0)
                found[std::atoi(tag.c_str() + prefix.size())] =
                    closed == "-" ? 0 : std::atoll(closed.c_str());
        }
    }
    r.seen_at.assign(static_cast<size_t>(conc), 0);
    for (const auto& [i, at] : found) {
        r.seen_at[i] = at;
        if (at != 0) {
            ++r.seen;
            r.us.push_back(static_cast<double>(at - r.closed[i]));
        }
    }
    return r;
}

// ---- where the time goes: perf's syscall tracepoints on CLOCK_MONOTONIC

struct TraceEvent {
    std::string comm;
    int pid = 0, tid = 0;
    int64_t us = 0;
    std::string event;  // "exit_epoll_wait", "enter_shutdown", "enter_close", "exit_read"
};

class PerfTrace {
  public:
    bool start(const std::string& dir) {
        perf_ = agbench::find_program("perf");
        if (perf_.empty() || ::geteuid() != 0)
            return false;
        data_ = dir + "/perf.data";
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        std::remove(data_.c_str());
        if (!child_.start({perf_,      "record",
                           "-q",       "-a",
                           "-k",       "mono",
                           "-o",       data_,
                           "-e",       "syscalls:sys_exit_epoll_wait",
                           "--filter", "ret > 0",
                           "-e",       "syscalls:sys_enter_shutdown",
                           "-e",       "syscalls:sys_exit_shutdown",
                           "-e",       "syscalls:sys_enter_close",
                           "-e",       "syscalls:sys_exit_read",
                           "--filter", "ret == 0"},
                          dir + "/perf.out"))
            return false;
        std::this_thread::sleep_for(Millis(1500));  // perf's set-up
        return child_.running();
    }
    std::vector<TraceEvent> stop() {
        std::vector<TraceEvent> out;
        if (!child_.running())
            return out;
        ::kill(child_.pid(), SIGINT);
        Deadline d(Millis(10000));
        while (!d.expired() && ::waitpid(child_.pid(), nullptr, WNOHANG) == 0)
            std::this_thread::sleep_for(Millis(20));
        child_.stop();
        CommandResult r = run_command(
            {perf_, "script", "-i", data_, "-F", "comm,pid,tid,time,event"}, Millis(60000));
        std::istringstream in(r.output);
        static const std::regex line(
            "^\\s*(.*?)\\s+(\\d+)/(\\d+)\\s+(\\d+)\\.(\\d+):\\s+syscalls:sys_(\\w+):");
        for (std::string l; std::getline(in, l);) {
            std::smatch m;
            if (!std::regex_search(l, m, line))
                continue;
            TraceEvent e;
            e.comm = m[1];
            e.pid = std::atoi(m[2].str().c_str());
            e.tid = std::atoi(m[3].str().c_str());
            std::string frac = m[5].str();
            frac.resize(6, '0');
            e.us = std::atoll(m[4].str().c_str()) * 1000000 + std::atoll(frac.c_str());
            e.event = m[6];
            out.push_back(e);
        }
        std::remove(data_.c_str());
        return out;
    }

  private:
    std::string perf_, data_;
    agbench::Child child_;
};

// The first event at or after `from` that matches.
const TraceEvent* first_after(const std::vector<TraceEvent>& ev, int64_t from,
                              const std::function<bool(const TraceEvent&)>& match) {
    for (const auto& e : ev)
        if (e.us >= from && match(e))
            return &e;
    return nullptr;
}

// Stages of single aborts (one request at a time): client close -> the
// proxy's event loop woke (epoll_wait returned) -> the proxy cut the backend
// connection (module: shutdown() on the monitor thread; nginx: close()) ->
// the backend's read() returned end-of-file -> the backend's request
// context was cancelled (its handler woke).
//
// Batches (`conc` at once, streaming), matched by order: the k-th client
// close, the k-th shutdown() by the module's monitor thread, the k-th
// end-of-file read by the backend and the k-th context cancelled (nginx's
// close() of the upstream cannot be told from its close() of the client by
// the syscall alone, so its cut column stays empty).
void breakdown(const Settings& st, Front& f, agbench::Agpeer& backend, bool module, int conc,
               std::map<std::string, std::vector<std::vector<double>>>* stages,
               std::map<std::string, std::vector<std::vector<double>>>* batch_stages) {
    PerfTrace perf;
    if (!perf.start(work_dir("bench-perf")))
        return;
    const int singles = st.smoke ? 2 : 15;
    std::vector<PropRound> rounds, batches;
    for (int k = 0; k < singles; ++k) {
        rounds.push_back(prop_round(f, backend, 1, false, 3000));
        std::this_thread::sleep_for(Millis(30));
    }
    for (int k = 0; k < (st.smoke ? 1 : 4); ++k) {
        batches.push_back(prop_round(f, backend, conc, false, 3000));
        std::this_thread::sleep_for(Millis(50));
    }
    const std::vector<TraceEvent> ev = perf.stop();
    {
        auto& b = (*batch_stages)[f.name];
        // 4 stages, the sweeps (closes, cuts: first -> last), then the
        // monitor's shutdown() calls: how long each took, and the time from
        // one's return to the next one's call.
        b.assign(8, {});
        for (const auto& r : batches) {
            if (r.seen != r.n)
                continue;
            std::vector<int64_t> c = r.closed, seen = r.seen_at, cut, cut_end, eof;
            std::sort(c.begin(), c.end());
            std::sort(seen.begin(), seen.end());
            for (const auto& e : ev) {
                if (e.us < c.front() || e.us > seen.back() + 1000)
                    continue;
                if (module && e.comm == "ag-monitor" && e.event == "enter_shutdown")
                    cut.push_back(e.us);
                if (module && e.comm == "ag-monitor" && e.event == "exit_shutdown" &&
                    cut_end.size() < cut.size())
                    cut_end.push_back(e.us);
                if (e.pid == backend.pid() && e.event == "exit_read")
                    eof.push_back(e.us);
            }
            if (eof.size() < c.size())
                continue;
            b[4].push_back(static_cast<double>(c.back() - c.front()));
            if (module && cut.size() >= c.size())
                b[5].push_back(static_cast<double>(cut[c.size() - 1] - cut[0]));
            for (size_t k = 0; module && k < c.size() && k < cut_end.size(); ++k) {
                b[6].push_back(static_cast<double>(cut_end[k] - cut[k]));
                if (k + 1 < cut.size() && k + 1 < c.size())
                    b[7].push_back(static_cast<double>(cut[k + 1] - cut_end[k]));
            }
            for (size_t k = 0; k < c.size(); ++k) {
                if (module && cut.size() >= c.size()) {
                    b[0].push_back(static_cast<double>(cut[k] - c[k]));
                    b[1].push_back(static_cast<double>(eof[k] - cut[k]));
                }
                b[2].push_back(static_cast<double>(eof[k] - c[k]));
                b[3].push_back(static_cast<double>(seen[k] - eof[k]));
            }
        }
    }
    const std::string loop_comm = module ? "ag-monitor" : "nginx";
    const int backend_pid = backend.pid();
    auto& out = (*stages)[f.name];
    out.assign(5, {});
    for (const auto& r : rounds) {
        if (r.seen != 1)
            continue;
        const int64_t c = r.closed[0];
        const TraceEvent* woke = first_after(ev, c, [&](const TraceEvent& e) {
            return e.comm == loop_comm && e.event == "exit_epoll_wait";
        });
        if (!woke)
            continue;
        const TraceEvent* cut = first_after(ev, woke->us, [&](const TraceEvent& e) {
            return e.tid == woke->tid &&
                   (module ? e.event == "enter_shutdown" : e.event == "enter_close");
        });
        if (!cut)
            continue;
        const TraceEvent* eof = first_after(ev, cut->us, [&](const TraceEvent& e) {
            return e.pid == backend_pid && e.event == "exit_read";
        });
        if (!eof || eof->us > r.seen_at[0] + 1000)
            continue;
        out[0].push_back(static_cast<double>(woke->us - c));
        out[1].push_back(static_cast<double>(cut->us - woke->us));
        out[2].push_back(static_cast<double>(eof->us - cut->us));
        out[3].push_back(static_cast<double>(r.seen_at[0] - eof->us));
        out[4].push_back(static_cast<double>(r.seen_at[0] - c));
    }
}

void proxy_propagation(const Settings& st, agbench::Agpeer& backend) {
    std::printf("### (b) Proxy propagation: httpd + mod_abortguard beside nginx (%s MPM)\n\n",
                st.mpm.c_str());
    if (!st.have_nginx()) {
        std::printf(
            "Skipped: nginx is not installed (Debian: nginx-light; bench/run installs "
            "it).\n\n");
        return;
    }
    std::vector<std::unique_ptr<Front>> fronts;
    for (FrontKind k : {FrontKind::kModule, FrontKind::kNginx, FrontKind::kStock}) {
        std::string why;
        auto f = start_front(st, k, backend.port(), &why);
        if (!f) {
            std::printf("A proxy did not start: %s\n\n", why.c_str());
            for (auto& g : fronts)
                g->stop();
            return;
        }
        fronts.push_back(std::move(f));
    }
    const int conc = st.smoke ? 3 : 20;
    const int rounds = st.smoke ? 1 : 10;
    std::printf(
        "%d clients each send a request through the proxy to the same Go backend (`agpeer "
        "backend`, `/hold`), then all close (FIN) in one sweep; the backend notes when each "
        "request's context is cancelled (it saw the proxy close the connection). "
        "Two moments: *streaming* (the backend has sent its first body bytes, which reached the "
        "client) and *before the status line* (the backend holds every request, nothing sent "
        "yet). httpd + mod_abortguard: `AbortGuard On`, `AbortGuardProxy On`, mod_proxy_http "
        "with its connection pool; nginx: `proxy_pass` to an upstream with keep-alive, "
        "`proxy_buffering off`, `proxy_ignore_client_abort off` (the default); stock httpd: "
        "mod_proxy_http alone, the backend holds 1 s. %d rounds of each, the proxies "
        "alternating, after one round each that is not counted (warm-up). Times in ms; \"p99 "
        "spread\": the lowest and highest p99 of single "
        "rounds.\n\n",
        conc, rounds);
    std::printf(
        "| Moment | Proxy | Backend saw the close / aborted | min | median | p99 | max | p99 "
        "spread |\n"
        "|---|---|---|---|---|---|---|---|\n");
    // One round per proxy first, not counted: its worker threads, backend
    // connections and pools are created there, once, for either proxy.
    for (size_t i = 0; i < 2; ++i)
        prop_round(*fronts[i], backend, conc, false, 3000);
    std::map<std::string, Summary> streaming;
    for (bool pre : {false, true}) {
        std::vector<std::vector<std::vector<double>>> per_round(2);
        std::vector<PropRound> all(2);
        for (int k = 0; k < rounds; ++k) {
            for (size_t j = 0; j < 2; ++j) {
                const size_t i = (j + static_cast<size_t>(k)) % 2;
                PropRound r = prop_round(*fronts[i], backend, conc, pre, 3000);
                all[i].n += r.n;
                all[i].seen += r.seen;
                all[i].us.insert(all[i].us.end(), r.us.begin(), r.us.end());
                per_round[i].push_back(r.us);
            }
        }
        const char* moment = pre ? "before the status line" : "streaming";
        for (size_t i = 0; i < 2; ++i) {
            const Summary s = summarize(all[i].us);
            std::printf("| %s | %s | %d / %d | %s | %s |\n", moment, fronts[i]->name.c_str(),
                        all[i].seen, all[i].n, fmt_ms(s).c_str(),
                        spread(per_round[i], 0.99).c_str());
            write_data(st,
                       std::string("proxy_") + (pre ? "pre_" : "stream_") +
                           (i == 0 ? "module" : "nginx") + ".dat",
                       all[i].us);
        }
        const PropRound stock = prop_round(*fronts[2], backend, conc, pre, 1000);
        std::printf("| %s | %s | %d / %d within the backend's 1 s | %s | - |\n", moment,
                    fronts[2]->name.c_str(), stock.seen, stock.n,
                    fmt_ms(summarize(stock.us)).c_str());
        const Summary m = summarize(all[0].us), n = summarize(all[1].us);
        const bool met = m.median <= n.median && m.p99 <= n.p99 && all[0].seen == all[0].n;
        summary(std::string("(b) proxy propagation, ") + std::to_string(conc) + " at once, " +
                    moment + ": p50 / p99 ms",
                f3(m.median / 1000) + " / " + f3(m.p99 / 1000),
                "nginx: " + f3(n.median / 1000) + " / " + f3(n.p99 / 1000),
                ratio(m.median, n.median) + " / " + ratio(m.p99, n.p99),
                std::string("p50 and p99 <= nginx: ") + (met ? "met" : "**missed**"));
        std::fflush(stdout);
    }
    std::printf("\n");
    // Where the time goes.
    if (st.perf) {
        std::map<std::string, std::vector<std::vector<double>>> stages, batch_stages;
        for (size_t i = 0; i < 2; ++i)
            breakdown(st, *fronts[i], backend, i == 0, conc, &stages, &batch_stages);
        if (stages.empty()) {
            std::printf("Breakdown skipped: needs `perf` (linux-perf) and root.\n\n");
        } else {
            std::printf(
                "Where the time goes, single aborts (one request at a time, %d each), traced "
                "with `perf record -a -k mono` on syscall tracepoints (same clock as the "
                "client): client close -> the proxy's event loop returns from `epoll_wait` "
                "(mod_abortguard: its monitor thread; nginx: its worker) -> the proxy cuts the "
                "backend connection (`shutdown()` on the monitor thread; nginx: `close()`) -> "
                "the backend's `read()` returns end-of-file -> the backend's request context is "
                "cancelled. Medians (p90 in brackets), ms.\n\n"
                "| Proxy | n | close -> epoll wake | wake -> cut | cut -> backend read EOF "
                "| EOF -> ctx cancelled | total |\n|---|---|---|---|---|---|---|\n",
                st.smoke ? 2 : 15);
            for (size_t i = 0; i < 2; ++i) {
                auto it = stages.find(fronts[i]->name);
                if (it == stages.end() || it->second.empty())
                    continue;
                std::printf("| %s | %zu |", fronts[i]->name.c_str(), it->second[0].size());
                for (const auto& v : it->second)
                    std::printf(" %.3f (%.3f) |", median(v) / 1000, quantile(v, 0.9) / 1000);
                std::printf("\n");
            }
            std::printf(
                "\n%d at once (streaming, %d rounds each, same trace), matched by order (the "
                "k-th close, shutdown, end-of-file, cancel). Medians (p99 in brackets), ms:\n\n"
                "| Proxy | n | close -> cut (`shutdown()`) | cut -> backend read EOF | close -> "
                "backend read EOF | EOF -> ctx cancelled | the client's %d closes, first -> last "
                "| the monitor's %d cuts, first -> last | one `shutdown()` call | from one "
                "call's return to the next call |\n|---|---|---|---|---|---|---|---|---|---|\n",
                conc, st.smoke ? 1 : 4, conc, conc);
            for (size_t i = 0; i < 2; ++i) {
                auto it = batch_stages.find(fronts[i]->name);
                if (it == batch_stages.end() || it->second.empty())
                    continue;
                std::printf("| %s | %zu |", fronts[i]->name.c_str(), it->second[2].size());
                for (const auto& v : it->second) {
                    if (v.empty())
                        std::printf(" - |");
                    else
                        std::printf(" %.3f (%.3f) |", median(v) / 1000, quantile(v, 0.99) / 1000);
                }
                std::printf("\n");
            }
            std::printf("\n");
        }
    }
    for (auto& f : fronts)
        f->stop();
}

// ---------------------------------------------------------- refresh storm

// Goodput is counted in whole responses per round, so two proxies that both
// serve the app server's full capacity differ by a response now and then: a
// median that is one complete response short of the peer's is a tie, and the
// verdict says so rather than calling either side ahead.
std::string storm_verdict(double mod_rps, double ng_rps, double mod_ok, double ng_ok) {
    if (mod_rps >= ng_rps)
        return "met";
    if (ng_ok - mod_ok <= 1)
        return "met (a tie: " + f2(mod_ok) + " vs " + f2(ng_ok) +
               " complete responses per round, one apart)";
    return "**missed**";
}

void refresh_storm(const Settings& st, agbench::Agpeer& backend) {
    std::printf("### (c) Refresh storm: stock httpd, nginx, httpd + mod_abortguard (%s MPM)\n\n",
                st.mpm.c_str());
    if (!st.have_peer()) {
        std::printf("Skipped: needs bench/agpeer (Go).\n\n");
        return;
    }
    std::vector<FrontKind> kinds = {FrontKind::kStock, FrontKind::kModule};
    if (st.have_nginx())
        kinds.push_back(FrontKind::kNginx);
    else
        std::printf("nginx skipped: not installed (Debian: nginx-light).\n\n");
    std::vector<std::unique_ptr<Front>> fronts;
    for (FrontKind k : kinds) {
        std::string why;
        auto f = start_front(st, k, backend.port(), &why);
        if (!f) {
            std::printf("A proxy did not start: %s\n\n", why.c_str());
            for (auto& g : fronts)
                g->stop();
            return;
        }
        fronts.push_back(std::move(f));
    }
    const int rounds = st.smoke ? 1 : 3;
    const double seconds = st.smoke ? 2 : 12;
    std::printf(
        "12 users (`agpeer storm`, Go's HTTP client with keep-alive) in front of a 4-worker app "
        "server (`agpeer backend`: 4 slots, 200 ms of work per request, which stops when the "
        "request's context is cancelled, i.e. when the proxy closes the backend connection); "
        "30%% of requests are abandoned after 50-300 ms, the rest give up after 1 s; every user "
        "sends its next request at once. Goodput: complete responses per second. \"Computed "
        "for nobody\": responses the backend finished after their client had left (and the "
        "backend time they took); \"backend time on abandoned\": all slot time spent on "
        "requests whose client left. %d rounds of %.0f s per proxy, in an order that rotates; "
        "medians, with the range over rounds. Goodput counts whole responses, so one response "
        "more or less in a round moves it by 1/%.0f req/s: the verdict calls a median one "
        "complete response apart a tie.\n\n",
        rounds, seconds, seconds);
    std::vector<std::vector<std::map<std::string, double>>> res(fronts.size());
    int round_tag = 0;
    for (int k = 0; k < rounds; ++k) {
        for (size_t j = 0; j < fronts.size(); ++j) {
            const size_t i = (j + static_cast<size_t>(k)) % fronts.size();
            const std::string b = "http://127.0.0.1:" + std::to_string(backend.port());
            // A child of ours (not run_command's): it dies with us.
            CommandResult r;
            r.output = agbench::Child::run(
                {st.peer, "storm", "-url",
                 "http://127.0.0.1:" + std::to_string(fronts[i]->port()) + "/px/work", "-stats",
                 b + "/stats", "-idle", b + "/idle", "-seconds", f2(seconds), "-tag",
                 "s" + std::to_string(++round_tag), "-seed", std::to_string(k + 1)},
                work_dir("bench-go-backend") + "/storm.out",
                Millis(static_cast<int>(seconds * 1000) + 60000));
            const size_t at = r.output.find("storm ");
            if (at == std::string::npos) {
                std::fprintf(stderr, "bench: storm failed: %s\n", r.output.c_str());
                continue;
            }
            res[i].push_back(key_values(r.output.substr(at, r.output.find('\n', at) - at)));
        }
    }
    auto med = [&](size_t i, const std::string& key) {
        std::vector<double> v;
        for (const auto& m : res[i])
            v.push_back(m.count(key) ? m.at(key) : 0);
        return median(v);
    };
    auto range = [&](size_t i, const std::string& key) {
        double lo = 1e300, hi = -1e300;
        for (const auto& m : res[i]) {
            const double v = m.count(key) ? m.at(key) : 0;
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
        return lo > hi ? std::string("-") : f2(lo) + "-" + f2(hi);
    };
    std::printf(
        "| Proxy | Goodput, req/s (range) | Abandoned early / gave up / errors | Computed for "
        "nobody (range) | ... backend s | Backend s on abandoned requests | Backend busy s |\n"
        "|---|---|---|---|---|---|---|\n");
    std::string plot;
    for (size_t i = 0; i < fronts.size(); ++i) {
        std::printf(
            "| %s | **%.2f** (%s) | %.0f / %.0f / %.0f | %.0f (%s) | %.2f | %.2f | %.2f |\n",
            fronts[i]->name.c_str(), med(i, "goodput_rps"), range(i, "goodput_rps").c_str(),
            med(i, "abandoned"), med(i, "gave_up"), med(i, "errors"), med(i, "nobody"),
            range(i, "nobody").c_str(), med(i, "nobody_s"), med(i, "abandoned_work_s"),
            med(i, "backend_busy_s"));
        plot += "\"" + fronts[i]->name + "\" " + f2(med(i, "goodput_rps")) + "\n";
    }
    write_lines(st, "storm.dat", plot);
    std::printf("\n");
    const double mod = med(1, "goodput_rps"), stock = med(0, "goodput_rps");
    if (fronts.size() > 2) {
        const double ng = med(2, "goodput_rps");
        std::printf("Goodput ratios: module / nginx **%s**, module / stock httpd **%s**.\n\n",
                    ratio(mod, ng).c_str(), ratio(mod, stock).c_str());
        summary("(c) refresh storm goodput, req/s (computed for nobody)",
                f2(mod) + " (" + f2(med(1, "nobody")) + ")",
                "nginx: " + f2(ng) + " (" + f2(med(2, "nobody")) + "); stock httpd: " + f2(stock) +
                    " (" + f2(med(0, "nobody")) + ")",
                ratio(mod, ng) + " vs nginx; " + ratio(mod, stock) + " vs stock",
                std::string(">= nginx: ") + storm_verdict(mod, ng, med(1, "ok"), med(2, "ok")));
    } else {
        std::printf("Goodput ratio: module / stock httpd **%s**.\n\n", ratio(mod, stock).c_str());
    }
    for (auto& f : fronts)
        f->stop();
}

// ------------------------------------------------------------- (d) HTTP/2

void h2_reset(const Settings& st) {
    std::printf("### (d) HTTP/2 over TLS: stream reset -> the handler's wake-up (%s MPM)\n\n",
                st.mpm.c_str());
    if (!st.have_peer()) {
        std::printf(
            "Skipped: the client is bench/agpeer (Go's net/http client speaks h2 over "
            "TLS and resets a stream when its request is cancelled).\n\n");
        return;
    }
    if (st.mpm == "prefork") {
        std::printf("Skipped: mod_http2 does not run under prefork.\n\n");
        return;
    }
    const int h2_port = agbench::free_port();
    HttpdOptions o;
    o.name = "bench-h2-" + st.mpm;
    o.mpm = st.mpm;
    o.tls = true;  // the certificate, mod_ssl
    o.h2 = true;   // mod_http2
    o.extra_config = bench_config(64) + "Listen 127.0.0.1:" + std::to_string(h2_port) + "\n" +
                     "<VirtualHost 127.0.0.1:" + std::to_string(h2_port) + ">\n" +
                     "  SSLEngine on\n  SSLCertificateFile \"@RUNDIR@/cert.pem\"\n" +
                     "  SSLCertificateKeyFile \"@RUNDIR@/key.pem\"\n" +
                     "  Protocols h2 http/1.1\n</VirtualHost>\n";
    Httpd h(o);
    auto started = h.start();
    if (!started) {
        std::printf("httpd did not start: %s\n\n", started.message());
        return;
    }
    const int trials = st.h2_trials > 0 ? st.h2_trials : st.smoke ? 3 : 100;
    LogCursor log;
    log.start(h.run_dir() + "/bench.log");
    const std::string base = "https://127.0.0.1:" + std::to_string(h2_port) + "/bench?";
    CommandResult r;
    r.output = agbench::Child::run(
        {st.peer, "h2reset", "-n", std::to_string(trials), "-url",
         base + "hold=5000&wait=1&flag_us=100", "-other", base + "hold=300&wait=1", "-tag", "h2x"},
        h.run_dir() + "/h2reset.out", Millis(trials * 8000 + 30000));
    std::map<std::string, int64_t> cancel;
    int other_ok = 0, errors = 0;
    std::istringstream out(r.output);
    for (std::string l; std::getline(out, l);) {
        std::istringstream in(l);
        std::string w, tag, ok;
        int64_t at = 0;
        in >> w;
        if (w == "reset" && (in >> tag >> at >> ok)) {
            cancel[tag] = at;
            other_ok += ok == "true";
        } else if (w == "error") {
            ++errors;
            std::fprintf(stderr, "bench: h2reset: %s\n", l.c_str());
        }
    }
    std::this_thread::sleep_for(Millis(500));
    std::vector<double> flag_us, wake_us, wake_after_flag, det_after_flag;
    int woke = 0, flagged = 0;
    for (const auto& line : log.new_lines()) {
        std::istringstream in(line);
        std::string start, detected, noticed, url, flag;
        in >> start >> detected >> noticed >> url >> flag;
        const size_t t = url.find("&t=");
        if (t == std::string::npos)
            continue;
        auto it = cancel.find(url.substr(t + 3));
        if (it == cancel.end())
            continue;
        const int64_t c = it->second;
        if (noticed != "-") {
            ++woke;
            wake_us.push_back(static_cast<double>(std::atoll(noticed.c_str()) - c));
        }
        if (flag != "-" && !flag.empty()) {
            ++flagged;
            flag_us.push_back(static_cast<double>(std::atoll(flag.c_str()) - c));
            if (noticed != "-")
                wake_after_flag.push_back(
                    static_cast<double>(std::atoll(noticed.c_str()) - std::atoll(flag.c_str())));
            if (detected != "-")
                det_after_flag.push_back(
                    static_cast<double>(std::atoll(detected.c_str()) - std::atoll(flag.c_str())));
        }
    }
    std::printf(
        "Go's `net/http` client over TLS (ALPN h2, the browser's path) opens one connection per "
        "trial with two streams to the bench handler; once both have sent their first bytes, it "
        "cancels the first request (Go resets the stream: `RST_STREAM` CANCEL) and reads the "
        "second to its end. The reset stream's handler waits in `abortguard_wait()`; a second "
        "thread of the same handler polls `c->aborted` every 100 us and notes when it first "
        "saw mod_http2's own flag. %d trials; %zu resets sent, %d handlers woke, %d flags seen, "
        "the other stream completed %d times, %d trials failed. Times in ms.\n\n",
        trials, cancel.size(), woke, flagged, other_ok, errors);
    std::printf("| Interval | min | median | p99 | max |\n|---|---|---|---|---|\n");
    std::printf("| client cancel -> mod_http2's flag seen (100 us poll) | %s |\n",
                fmt_ms(summarize(flag_us)).c_str());
    std::printf("| client cancel -> handler woke in `abortguard_wait()` | %s |\n",
                fmt_ms(summarize(wake_us)).c_str());
    std::printf("| **flag seen -> handler woke** | %s |\n",
                fmt_ms(summarize(wake_after_flag)).c_str());
    std::printf("| flag seen -> the module's token aborted (`abortguard_aborted_at()`) | %s |\n\n",
                fmt_ms(summarize(det_after_flag)).c_str());
    {
        // How the tail is made: the trials whose wake-up came more than 1 ms
        // after the flag, with their values.
        std::vector<double> late;
        for (double v : wake_after_flag)
            if (v > 1000)
                late.push_back(v / 1000);
        std::sort(late.begin(), late.end());
        std::printf("Wake-ups more than 1 ms after the flag: %zu of %zu", late.size(),
                    wake_after_flag.size());
        for (size_t i = 0; i < late.size(); ++i)
            std::printf("%s%.2f", i == 0 ? " (ms: " : ", ", late[i]);
        std::printf("%s.\n\n", late.empty() ? "" : ")");
    }
    write_data(st, "h2_wake_after_flag.dat", wake_after_flag);
    write_data(st, "h2_flag.dat", flag_us);
    write_data(st, "h2_wake.dat", wake_us);
    const Summary wf = summarize(wake_after_flag), fl = summarize(flag_us), wk = summarize(wake_us);
    summary(
        "(d) HTTP/2 over TLS, stream reset: client cancel -> handler woke, p50 / p99 ms",
        f3(wk.median / 1000) + " / " + f3(wk.p99 / 1000),
        "mod_http2's flag (100 us poll): " + f3(fl.median / 1000) + " / " + f3(fl.p99 / 1000),
        "wake - flag p99: " + f3(wf.p99 / 1000) + " ms",
        std::string("wake-up p99 within 1 ms of the flag: ") +
            (wf.n > 0 && wf.p99 <= 1000 && woke == static_cast<int>(cancel.size()) ? "met"
                                                                                   : "**missed**"));
    auto stopped = h.stop();
    if (!stopped)
        std::printf("Note: %s\n\n", stopped.message());
}

// --------------------------------------- (e) keep-alive beside an abort storm

struct WrkResult {
    double rps = 0;
    long errors = 0;  // socket errors of every kind, and non-2xx/3xx
    long read_errors = 0;
};

WrkResult wrk_run(int port, const std::string& path, int seconds) {
    CommandResult r = run_command({"wrk", "-t2", "-c64", "-d" + std::to_string(seconds) + "s",
                                   "http://127.0.0.1:" + std::to_string(port) + path},
                                  Millis((seconds + 30) * 1000));
    WrkResult w;
    std::smatch m;
    static const std::regex rps("Requests/sec:\\s+([0-9.]+)");
    static const std::regex sock(
        "Socket errors: connect (\\d+), read (\\d+), write (\\d+), timeout (\\d+)");
    static const std::regex non2xx("Non-2xx or 3xx responses: (\\d+)");
    if (r.exit_code != 0 || !std::regex_search(r.output, m, rps))
        return w;
    w.rps = std::atof(m[1].str().c_str());
    if (std::regex_search(r.output, m, sock)) {
        w.read_errors = std::atol(m[2].str().c_str());
        for (int i = 1; i <= 4; ++i)
            w.errors += std::atol(m[i].str().c_str());
    }
    if (std::regex_search(r.output, m, non2xx))
        w.errors += std::atol(m[1].str().c_str());
    return w;
}

bool have_wrk() {
    return run_command({"sh", "-c", "command -v wrk"}, Millis(5000)).exit_code == 0;
}

void keepalive_storm(const Settings& st) {
    std::printf(
        "### (e) Keep-alive traffic beside an abort storm: stock httpd vs the module "
        "(%s MPM)\n\n",
        st.mpm.c_str());
    if (!have_wrk()) {
        std::printf("Skipped: wrk is not installed (Debian: apt-get install wrk).\n\n");
        return;
    }
    struct Server {
        const char* label;
        std::unique_ptr<Httpd> h;
    };
    std::vector<Server> servers;
    for (bool module : {false, true}) {
        HttpdOptions o;
        o.name = std::string("bench-ka-") + (module ? "ag-" : "stock-") + st.mpm;
        o.mpm = st.mpm;
        o.load_abortguard = module;
        o.abortguard_on = module;
        o.extra_config = bench_config(128);
        servers.push_back(
            {module ? "httpd + mod_abortguard" : "stock httpd", std::make_unique<Httpd>(o)});
        auto started = servers.back().h->start();
        if (!started) {
            std::printf("httpd did not start: %s\n\n", started.message());
            return;
        }
    }
    const int rounds = st.smoke ? 1 : 3;
    const int seconds = st.smoke ? 1 : 5;
    const int aborters = 4;
    std::printf(
        "`wrk -t2 -c64` on a fast URL (the tiny handler) for %d s while %d clients open "
        "connections and abort 2-second requests as fast as they can (each: connect, "
        "`GET /bench?hold=2000&poll_us=10000`, wait up to 200 ms for its first bytes, close). The "
        "slow handler knows nothing of the module: it polls `c->aborted` every 10 ms, which "
        "only the module sets without a write. 128 worker threads. %d rounds per server, "
        "alternating; medians (range).\n\n",
        seconds, aborters, rounds);
    std::vector<std::vector<WrkResult>> wr(servers.size());
    std::vector<std::vector<double>> abort_rate(servers.size());
    for (int k = 0; k < rounds; ++k) {
        for (size_t j = 0; j < servers.size(); ++j) {
            const size_t i = (j + static_cast<size_t>(k)) % servers.size();
            const int port = servers[i].h->port();
            std::atomic<bool> stop{false};
            std::atomic<long> aborts{0};
            std::vector<std::thread> threads;
            for (int a = 0; a < aborters; ++a) {
                threads.emplace_back([&, a] {
                    int n = 0;
                    while (!stop.load()) {
                        RawClient c;
                        if (!c.connect(port, Millis(1000))) {
                            std::this_thread::sleep_for(Millis(10));
                            continue;
                        }
                        c.send(http_get("/bench?hold=2000&poll_us=10000&t=ka" + std::to_string(a) +
                                        "n" + std::to_string(++n)));
                        c.read_until("started\n", Millis(200));
                        c.close_fin();
                        aborts.fetch_add(1);
                    }
                });
            }
            const int64_t t0 = monotonic_us();
            WrkResult w = wrk_run(port, "/tiny", seconds);
            const double elapsed = static_cast<double>(monotonic_us() - t0) / 1e6;
            stop.store(true);
            for (auto& t : threads)
                t.join();
            wr[i].push_back(w);
            abort_rate[i].push_back(static_cast<double>(aborts.load()) / elapsed);
            // Held handlers of this round end before the next server's round.
            std::this_thread::sleep_for(Millis(2200));
        }
    }
    std::printf(
        "| Server | wrk req/s (range) | wrk errors (read errors) | aborts/s by the clients |\n"
        "|---|---|---|---|\n");
    std::vector<double> rps_med(servers.size());
    std::string plot;
    for (size_t i = 0; i < servers.size(); ++i) {
        std::vector<double> rps, errs, reads;
        for (const auto& w : wr[i]) {
            rps.push_back(w.rps);
            errs.push_back(static_cast<double>(w.errors));
            reads.push_back(static_cast<double>(w.read_errors));
        }
        rps_med[i] = median(rps);
        std::printf("| %s | **%.0f** (%.0f-%.0f) | %.0f (%.0f) | %.0f |\n", servers[i].label,
                    rps_med[i], *std::min_element(rps.begin(), rps.end()),
                    *std::max_element(rps.begin(), rps.end()), median(errs), median(reads),
                    median(abort_rate[i]));
        plot += std::string("\"") + servers[i].label + "\" " + f2(rps_med[i]) + "\n";
    }
    write_lines(st, "kastorm.dat", plot);
    std::printf("\nRatio module / stock: **%s**.\n\n", ratio(rps_med[1], rps_med[0]).c_str());
    summary("(e) keep-alive req/s while clients abort slow requests (aborts/s: module " +
                f2(median(abort_rate[1])) + ", stock " + f2(median(abort_rate[0])) + ")",
            f2(rps_med[1]), "stock httpd: " + f2(rps_med[0]), ratio(rps_med[1], rps_med[0]), "");
    for (auto& s : servers) {
        auto stopped = s.h->stop();
        if (!stopped)
            std::fprintf(stderr, "bench: %s: %s\n", s.label, stopped.message());
    }
}

// --------------------------------------------------------------- throughput

double wrk_rps(int port, const std::string& path, int seconds) {
    CommandResult r = run_command({"wrk", "-t2", "-c64", "-d" + std::to_string(seconds) + "s",
                                   "http://127.0.0.1:" + std::to_string(port) + path},
                                  Millis((seconds + 30) * 1000));
    std::smatch m;
    static const std::regex rps("Requests/sec:\\s+([0-9.]+)");
    if (r.exit_code != 0 || !std::regex_search(r.output, m, rps))
        return 0;
    return std::atof(m[1].str().c_str());
}

void throughput(const Settings& st) {
    std::printf("### Throughput (%s MPM, wrk -t2 -c64)\n\n", st.mpm.c_str());
    if (!have_wrk()) {
        std::printf("Skipped: wrk is not installed (Debian: apt-get install wrk).\n\n");
        return;
    }
    struct Variant {
        const char* label;
        bool load, on;
    };
    const std::vector<Variant> variants = {{"AbortGuard On", true, true},
                                           {"AbortGuard Off", true, false},
                                           {"not loaded", false, false}};
    std::vector<std::unique_ptr<Httpd>> servers;
    for (const auto& v : variants) {
        HttpdOptions o;
        o.name = std::string("bench-tput-") + (v.load ? (v.on ? "on-" : "off-") : "none-") + st.mpm;
        o.mpm = st.mpm;
        o.load_abortguard = v.load;
        o.abortguard_on = v.on;
        o.extra_config = bench_config(128);
        o.files["htdocs/static.txt"] = std::string(1024, 'x');
        servers.push_back(std::make_unique<Httpd>(o));
        auto started = servers.back()->start();
        if (!started) {
            std::printf("httpd did not start: %s\n\n", started.message());
            return;
        }
    }
    const int rounds = st.smoke ? 1 : 5;
    const int seconds = st.smoke ? 1 : 5;
    std::printf(
        "Requests per second, median of %d rounds of %d s after a warm-up; the three servers "
        "take turns within each round, in an order that rotates from round to round.\n\n",
        rounds, seconds);
    std::printf(
        "| Target | On | Off | not loaded | On / Off | On / not loaded |\n"
        "|---|---|---|---|---|---|\n");
    for (const char* path : {"/tiny", "/static.txt"}) {
        // A warm-up run each (pools, caches, the first children's threads),
        // then rounds whose order rotates, so that no server always runs
        // first or right after the same other.
        for (auto& s : servers)
            wrk_rps(s->port(), path, 1);
        std::vector<std::vector<double>> rps(variants.size());
        for (int k = 0; k < rounds; ++k) {
            for (size_t j = 0; j < variants.size(); ++j) {
                const size_t i = (j + static_cast<size_t>(k)) % variants.size();
                rps[i].push_back(wrk_rps(servers[i]->port(), path, seconds));
            }
        }
        const double on = median(rps[0]), off = median(rps[1]), none = median(rps[2]);
        std::printf("| %s | %.0f | %.0f | %.0f | %.3f | %.3f |\n",
                    std::strcmp(path, "/tiny") == 0 ? "tiny handler" : "static file (1 KiB)", on,
                    off, none, off > 0 ? on / off : 0, none > 0 ? on / none : 0);
        std::fflush(stdout);
    }
    std::printf("\n");
    for (auto& s : servers)
        s->stop();
}

}  // namespace
}  // namespace agtest

int main(int argc, char** argv) {
    agtest::Settings st;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--smoke") == 0)
            st.smoke = true;
        else if (std::strcmp(argv[i], "--mpm") == 0 && i + 1 < argc)
            st.mpm = argv[++i];
        else if (std::strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            st.data_dir = argv[++i];
        else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            st.only.insert(argv[++i]);
        else if (std::strcmp(argv[i], "--held") == 0 && i + 1 < argc)
            st.held.push_back(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--peer") == 0 && i + 1 < argc)
            st.peer = argv[++i];
        else if (std::strcmp(argv[i], "--nginx") == 0 && i + 1 < argc)
            st.nginx = argv[++i];
        else if (std::strcmp(argv[i], "--no-perf") == 0)
            st.perf = false;
        else if (std::strcmp(argv[i], "--h2-trials") == 0 && i + 1 < argc)
            st.h2_trials = std::atoi(argv[++i]);
    }
    st.nginx = agbench::find_program(st.nginx.empty() ? "nginx" : st.nginx);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    // A killed run's peers go with it (PR_SET_PDEATHSIG); an interrupted one
    // stops them through the destructors.
    signal(SIGPIPE, SIG_IGN);
    if (st.part("detection"))
        agtest::detection(st);
    if (st.part("proxy") || st.part("storm")) {
        agbench::Agpeer backend(st.peer, agtest::work_dir("bench-go-backend"));
        if (!st.have_peer()) {
            std::printf(
                "### (b) Proxy propagation and (c) refresh storm\n\nSkipped: the backend "
                "is bench/agpeer, which is not built (bench/run builds it with Debian's "
                "golang-go).\n\n");
        } else if (!backend.start("backend", {"-workers", "4"})) {
            std::printf(
                "### (b) Proxy propagation and (c) refresh storm\n\nThe Go backend did "
                "not start.\n\n");
        } else {
            if (st.part("proxy"))
                agtest::proxy_propagation(st, backend);
            if (st.part("storm"))
                agtest::refresh_storm(st, backend);
        }
        backend.stop();
    }
    if (st.part("h2"))
        agtest::h2_reset(st);
    if (st.part("kastorm"))
        agtest::keepalive_storm(st);
    if (st.part("throughput"))
        agtest::throughput(st);
    agtest::write_summary(st);
    return 0;
}
