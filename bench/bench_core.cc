// Monitor scalability in lib/ alone, on real sockets: what one watch costs
// (register + unregister), how long an abort storm of many sockets takes to
// process, and the heap memory one watched request costs the core.
//
// Prints a markdown fragment (bench/run puts it into RESULTS.md).
// Usage: bench_core [--smoke]   (--smoke: tiny sizes, for make check)
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "clock.h"
#include "monitor.h"
#include "request_state.h"
#include "sockets.h"
#include "token.h"

namespace {

using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::RequestState;
using abortguard::Token;

struct Sizes {
    int reg_iterations;
    int idle_watches;
    int storm_sockets;
};

// Room for the storm's 2 x N descriptors (as root the hard limit can grow).
int raise_fd_limit(int wanted) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < static_cast<rlim_t>(wanted)) {
        struct rlimit more = {static_cast<rlim_t>(wanted), std::max(rl.rlim_max, rlim_t(wanted))};
        if (setrlimit(RLIMIT_NOFILE, &more) != 0) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return static_cast<int>(rl.rlim_cur);
}

int64_t percentile(std::vector<int64_t> v, double q) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

// ns per watch()+unwatch() pair on one socket, with `idle` other watches live.
// `flags`: 0 re-arms with one epoll_ctl per watch (a new request whose
// socket's registration fired or changed); kSameSocket is a keep-alive
// connection's next request taking its registration over.
double register_cost(Monitor* m, int iterations, int idle, unsigned flags) {
    agtest::Listener listener;
    std::vector<std::pair<agtest::Fd, agtest::Fd>> others;
    std::vector<std::unique_ptr<Token>> tokens;
    std::vector<Monitor::WatchId> ids;
    for (int i = 0; i < idle; ++i) {
        others.push_back(listener.connect_pair());
        tokens.push_back(std::make_unique<Token>());
        Monitor::WatchId id = 0;
        if (m->watch(others.back().second.get(), 0, tokens.back().get(), nullptr, nullptr, &id)
                .is_ok())
            ids.push_back(id);
    }
    auto [client, server] = listener.connect_pair();
    Token token;
    auto once = [&] {
        Monitor::WatchId id = 0;
        m->watch(server.get(), flags, &token, nullptr, nullptr, &id);
        m->unwatch(id);
    };
    for (int i = 0; i < iterations / 10; ++i)
        once();  // warm-up: slot table and epoll set at size
    const int64_t start = mono_ns();
    for (int i = 0; i < iterations; ++i)
        once();
    const double per = static_cast<double>(mono_ns() - start) / iterations;
    for (auto id : ids)
        m->unwatch(id);
    return per;
}

// A loopback listener with a deep backlog, whose port and descriptor the
// storm needs (agtest::Listener keeps them to itself).
class StormListener {
  public:
    StormListener() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            listen(fd_.get(), 4096) == 0 &&
            getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0)
            port_ = ntohs(a.sin_port);
    }
    int fd() const { return fd_.get(); }
    int port() const { return port_; }

  private:
    agtest::Fd fd_;
    int port_ = 0;
};

struct StormEntry {
    std::atomic<int64_t> fired_ns{0};
    std::atomic<int>* done = nullptr;
};

void on_storm_abort(void* arg, int) {
    auto* e = static_cast<StormEntry*>(arg);
    e->fired_ns.store(mono_ns(), std::memory_order_relaxed);
    e->done->fetch_add(1, std::memory_order_release);
}

struct StormResult {
    int sockets = 0, detected = 0;
    int64_t total_ns = 0;  // first close -> last callback
    int64_t p50_ns = 0, p99_ns = 0, max_ns = 0;
};

// The peers of the storm, in a child process (so that neither process needs
// 2 x N descriptors): it connects n sockets, tells each its index, waits for
// the go, then closes them all as fast as it can, noting each close time.
void storm_peers(int port, int n, int go_fd, int64_t* closed_ns) {
    std::vector<int> fds(static_cast<size_t>(n), -1);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; ++i) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            write(fds[i], &i, sizeof i) != sizeof i)
            _exit(3);
    }
    char go;
    if (read(go_fd, &go, 1) != 1)
        _exit(4);
    for (int i = 0; i < n; ++i) {
        closed_ns[i] = mono_ns();
        close(fds[i]);
    }
    _exit(0);
}

// N watched sockets whose peers all close at once (FIN).
StormResult abort_storm(Monitor* m, int n) {
    StormResult r;
    StormListener listener;
    const size_t bytes = sizeof(int64_t) * static_cast<size_t>(n);
    auto* closed_ns = static_cast<int64_t*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    int go[2];
    if (closed_ns == MAP_FAILED || pipe(go) != 0)
        return r;
    const pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        storm_peers(listener.port(), n, go[0], closed_ns);
    }
    close(go[0]);
    std::vector<agtest::Fd> server(static_cast<size_t>(n));
    std::vector<Token> tokens(static_cast<size_t>(n));
    std::vector<StormEntry> entries(static_cast<size_t>(n));
    std::vector<Monitor::WatchId> ids(static_cast<size_t>(n), 0);
    std::atomic<int> done{0};
    for (int k = 0; k < n; ++k) {
        agtest::Fd fd(accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
        int i = -1;
        if (fd.get() < 0 || read(fd.get(), &i, sizeof i) != sizeof i || i < 0 || i >= n)
            break;
        server[i] = std::move(fd);
        entries[i].done = &done;
        m->watch(server[i].get(), 0, &tokens[i], on_storm_abort, &entries[i], &ids[i]);
    }
    r.sockets = n;
    const int64_t start = mono_ns();
    if (write(go[1], "g", 1) != 1)
        r.sockets = 0;
    int status = 0;
    waitpid(pid, &status, 0);
    const int64_t deadline = start + 10000000000;
    while (done.load(std::memory_order_acquire) < n && mono_ns() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::vector<int64_t> lat;
    int64_t last = 0;
    for (int i = 0; i < n; ++i) {
        const int64_t f = entries[i].fired_ns.load(std::memory_order_relaxed);
        if (f != 0) {
            lat.push_back(f - closed_ns[i]);
            last = std::max(last, f);
        }
        if (ids[i] != 0)
            m->unwatch(ids[i]);
    }
    r.detected = static_cast<int>(lat.size());
    r.total_ns = last > 0 ? last - closed_ns[0] : 0;
    r.p50_ns = percentile(lat, 0.50);
    r.p99_ns = percentile(lat, 0.99);
    r.max_ns = percentile(lat, 1.0);
    munmap(closed_ns, bytes);
    close(go[1]);
    return r;
}

// Heap bytes per watched request in the core: its Token plus its share of
// the monitor's slot table. The kernel's epoll entry is not on this heap.
double heap_per_watch(Monitor* m, int n) {
    agtest::Listener listener;
    std::vector<std::pair<agtest::Fd, agtest::Fd>> pairs;
    pairs.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
        pairs.push_back(listener.connect_pair());
    std::vector<RequestState*> states(static_cast<size_t>(n));
    std::vector<Monitor::WatchId> ids(static_cast<size_t>(n));
    const size_t before = mallinfo2().uordblks;
    for (int i = 0; i < n; ++i) {
        states[i] = new RequestState("/reports/2026/q3?format=pdf", "report-handler");
        m->watch(pairs[i].second.get(), 0, &states[i]->token(), nullptr, nullptr, &ids[i]);
    }
    const size_t after = mallinfo2().uordblks;
    for (int i = 0; i < n; ++i) {
        m->unwatch(ids[i]);
        delete states[i];
    }
    return static_cast<double>(after - before) / n;
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
    Sizes sz = smoke ? Sizes{2000, 100, 200} : Sizes{200000, 1000, 10000};
    // The storm's peers live in a child process: N descriptors here.
    const int limit = raise_fd_limit(sz.storm_sockets + 2 * sz.idle_watches + 64);
    if (limit < sz.storm_sockets + 64)
        sz.storm_sockets = limit - 64;

    std::unique_ptr<Monitor> m;
    auto st = Monitor::create(&m);
    if (!st.is_ok()) {
        std::fprintf(stderr, "bench_core: %s\n", st.to_string().c_str());
        return 1;
    }
    const double reg0 = register_cost(m.get(), sz.reg_iterations, 0, 0);
    const double reg1 = register_cost(m.get(), sz.reg_iterations, sz.idle_watches, 0);
    const double reg_ka =
        register_cost(m.get(), sz.reg_iterations, sz.idle_watches, Monitor::kSameSocket);
    const StormResult storm = abort_storm(m.get(), sz.storm_sockets);
    const double heap = heap_per_watch(m.get(), smoke ? 200 : 2000);

    std::printf("| Measure (lib/ only) | Result | Target |\n|---|---|---|\n");
    std::printf(
        "| register + unregister, no other watch (one epoll_ctl) | %.0f ns | <= 1000 ns |\n", reg0);
    std::printf("| register + unregister, %d other watches live | %.0f ns | <= 1000 ns |\n",
                sz.idle_watches, reg1);
    std::printf(
        "| register + unregister, keep-alive request (registration taken over) | %.0f ns | <= "
        "1000 ns |\n",
        reg_ka);
    std::printf("| abort storm: %d peers close (FIN), detected | %d of %d | all |\n", storm.sockets,
                storm.detected, storm.sockets);
    std::printf("| abort storm: first close -> last callback | %.2f ms | |\n",
                static_cast<double>(storm.total_ns) / 1e6);
    std::printf(
        "| abort storm: per socket close -> callback, median / p99 / max | %.0f / %.0f / %.0f us "
        "| |\n",
        static_cast<double>(storm.p50_ns) / 1e3, static_cast<double>(storm.p99_ns) / 1e3,
        static_cast<double>(storm.max_ns) / 1e3);
    std::printf(
        "| heap per monitored request (core request state + monitor slot) | %.0f bytes | |\n",
        heap);
    m->stop(1000000000);
    return storm.detected == storm.sockets ? 0 : 2;
}
