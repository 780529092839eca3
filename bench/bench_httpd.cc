// Benchmarks against a real httpd (the integration tests' harness): abort
// detection latency with 1, 100 and 1,000 concurrent held requests, memory
// per monitored request, and throughput with AbortGuard On / Off / module
// not loaded (wrk), each pair alternated several times in one run.
//
// Prints markdown (bench/run puts it into RESULTS.md) and writes the raw
// latencies to DATA_DIR for the plot.
// Usage: bench_httpd [--smoke] [--mpm event|worker] [--data DATA_DIR]
//                    [--only detection|throughput] [--held N]...
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

#ifndef AG_BENCH_MODULE_SO
#error "AG_BENCH_MODULE_SO must be defined (the built mod_abortguard_bench.so)"
#endif

namespace agtest {
namespace {

struct Settings {
    bool smoke = false;
    std::string mpm = "event";
    std::string data_dir;
    std::string only;       // "detection" or "throughput": that part alone
    std::vector<int> held;  // detection: these levels instead of 1, 100, 1000
};

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
      << "<Location /bench>\n  SetHandler abortguard-bench\n</Location>\n"
      << "<Location /tiny>\n  SetHandler abortguard-bench\n</Location>\n"
      << "CustomLog \"@RUNDIR@/bench.log\" \"%{AGB_START_US}e %{AGB_DETECTED_US}e "
         "%{AGB_NOTICED_US}e %U%q\"\n";
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

// ---------------------------------------------------------------- detection

struct Round {
    int aborted = 0, detected = 0, noticed = 0;
    std::vector<double> detected_us, noticed_us;  // after the client's close
    // From the close's timestamp to the close returning: how long the client
    // itself was held up there (its timestamps are that much early at most).
    std::vector<double> stall_us;
    long rss_held = 0;  // while all were held
};

// `conc` requests held at once on `path`, then every client closes (FIN)
// in one sweep; reads the handler's timings back from bench.log. The
// handlers block in abortguard_wait() if `wait`, else poll c->aborted
// every `poll_us`.
Round held_round(Httpd& h, const std::string& path, int conc, int hold_ms, int poll_us,
                 bool wait = false) {
    static int round_no = 0;
    const std::string prefix = "r" + std::to_string(++round_no) + "x";
    LogCursor log;
    log.start(h.run_dir() + "/bench.log");
    std::vector<RawClient> clients(static_cast<size_t>(conc));
    Round r;
    for (int i = 0; i < conc; ++i) {
        if (!clients[i].connect(h.port(), Millis(10000)) ||
            !clients[i].send(http_get(
                path + "?hold=" + std::to_string(hold_ms) + "&poll_us=" + std::to_string(poll_us) +
                (wait ? "&wait=1" : "") + "&t=" + prefix + std::to_string(i) + "z")))
            std::fprintf(stderr, "bench: request %d did not go out\n", i);
    }
    for (auto& c : clients) {
        if (!c.read_until("started\n", Millis(30000)))
            std::fprintf(stderr, "bench: a held request did not start\n");
    }
    std::this_thread::sleep_for(Millis(conc > 100 ? 500 : 50));
    r.rss_held = group_rss_bytes(h);
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
        std::this_thread::sleep_for(Millis(20));
        found.clear();
        for (const auto& line : log.new_lines()) {
            std::istringstream in(line);
            std::vector<std::string> f(4);
            in >> f[0] >> f[1] >> f[2] >> f[3];
            const size_t t = f[3].find("&t=" + prefix);
            if (t != std::string::npos)
                found[std::atoi(f[3].c_str() + t + 3 + prefix.size())] = f;
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

Round held_rounds(Httpd& h, const Level& l, long* rss_sum) {
    Round all;
    for (int k = 0; k < l.rounds; ++k) {
        Round r = held_round(h, "/bench", l.conc, 30000, l.poll_us, l.wait);
        all.aborted += r.aborted;
        all.detected += r.detected;
        all.detected_us.insert(all.detected_us.end(), r.detected_us.begin(), r.detected_us.end());
        all.noticed_us.insert(all.noticed_us.end(), r.noticed_us.begin(), r.noticed_us.end());
        all.stall_us.insert(all.stall_us.end(), r.stall_us.begin(), r.stall_us.end());
        *rss_sum += r.rss_held;
    }
    return all;
}

std::vector<Level> detection_levels(bool smoke, std::vector<int> held) {
    if (held.empty())
        held = smoke ? std::vector<int>{1, 10} : std::vector<int>{1, 100, 1000};
    std::vector<Level> out;
    for (int conc : held) {
        // Enough samples at low concurrency: repeat the round.
        const int rounds = conc == 1 ? (smoke ? 3 : 200) : conc < 1000 ? (smoke ? 1 : 5) : 2;
        // 1,000 threads polling every ms would be the whole load of 2 cores.
        const int poll_us = conc >= 1000 ? 10000 : 1000;
        out.push_back({conc, true, poll_us, rounds});
        out.push_back({conc, false, poll_us, rounds});
    }
    return out;
}

void detection(const Settings& st) {
    const std::vector<Level> levels = detection_levels(st.smoke, st.held);
    const int top = levels.back().conc;
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
    std::printf("### Detection latency (%s MPM)\n\n", st.mpm.c_str());
    std::printf(
        "Client close (FIN) -> mod_abortguard detected the abort (the request's token "
        "reads aborted: `abortguard_aborted_at()`), and -> the handler noticed it: a handler "
        "blocked in `abortguard_wait()` (woken by the token), or one polling `c->aborted` as "
        "handlers written before this module do. Times in ms. The client takes its timestamp "
        "right before each close; \"client stall\" is how long that close took to return (the "
        "client competes for the CPU with the handlers it wakes), which bounds how early a "
        "timestamp can be.\n\n");
    std::printf(
        "| Held at once | Handler | Detected / aborted | Detected: min | median | p99 | max "
        "| Handler noticed: min | median | p99 | max | Client stall: p99 / max |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    long mem_on = 0, mem_off = 0;
    // The same number held without monitoring before and after the
    // monitored rounds: the difference is what monitoring costs in memory
    // (the unmonitored handlers end at their hold time).
    const int off_hold = top >= 1000 ? 4000 : 1000;
    for (const Level& l : levels) {
        const bool measure_memory = l.conc == top && l.wait;
        if (measure_memory)
            mem_off += held_round(h, "/bench-off", top, off_hold, 10000).rss_held;
        long rss_sum = 0;
        Round all = held_rounds(h, l, &rss_sum);
        if (measure_memory) {
            mem_on = rss_sum / l.rounds;
            mem_off = (mem_off + held_round(h, "/bench-off", top, off_hold, 10000).rss_held) / 2;
        }
        const std::string kind = l.wait ? "waits in `abortguard_wait()`"
                                        : "polls every " + std::to_string(l.poll_us / 1000) + " ms";
        const Summary stall = summarize(all.stall_us);
        std::printf("| %d | %s | %d / %d | %s | %s | %.3f / %.3f |\n", l.conc, kind.c_str(),
                    all.detected, all.aborted, fmt_ms(summarize(all.detected_us)).c_str(),
                    fmt_ms(summarize(all.noticed_us)).c_str(), stall.p99 / 1000, stall.max / 1000);
        std::fflush(stdout);
        const std::string suffix = std::to_string(l.conc) + (l.wait ? "_wait" : "_poll") + ".dat";
        write_data(st, "detected_" + suffix, all.detected_us);
        write_data(st, "noticed_" + suffix, all.noticed_us);
    }
    std::printf("\n");
    const double per = static_cast<double>(mem_on - mem_off) / top;
    std::printf(
        "Memory per monitored request (resident memory of all httpd processes with %d requests "
        "held under `AbortGuard On`, minus the same under `AbortGuard Off` (measured before and "
        "after), divided by %d): "
        "**%.0f bytes** (page-granular, so noisy at small counts).\n\n",
        top, top, per);
    auto stopped = h.stop();
    if (!stopped)
        std::printf("Note: %s\n\n", stopped.message());
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

double median(std::vector<double> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void throughput(const Settings& st) {
    std::printf("### Throughput (%s MPM, wrk -t2 -c64)\n\n", st.mpm.c_str());
    if (run_command({"wrk", "--version"}, Millis(5000)).exit_code < 0 ||
        run_command({"sh", "-c", "command -v wrk"}, Millis(5000)).exit_code != 0) {
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
            st.only = argv[++i];
        else if (std::strcmp(argv[i], "--held") == 0 && i + 1 < argc)
            st.held.push_back(std::atoi(argv[++i]));
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (st.only.empty() || st.only == "detection")
        agtest::detection(st);
    if (st.only.empty() || st.only == "throughput")
        agtest::throughput(st);
    if (!st.only.empty())
        return 0;
    std::printf(
        "### Not in bench/ yet\n\n"
        "| Measure | Where it is measured today |\n|---|---|\n"
        "| Proxy propagation latency (client abort -> backend sees close) | "
        "tests/integration/test_proxy.cc prints `proxy_propagation_us` and a per-MPM "
        "`proxy_propagation_summary` |\n"
        "| Lock hand-over latency (abort -> waiting request holds the lock) | "
        "tests/integration/test_locks.cc prints `lock_handover_us` per MPM |\n\n");
    return 0;
}
