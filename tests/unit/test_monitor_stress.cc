// The monitor's safety property under churn: threads register, fire and
// remove watches while other threads close and reopen descriptors, so fd
// numbers are reused constantly. No callback may ever arrive for a watch
// whose unwatch() has returned, nor for the wrong token.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "clock.h"
#include "monitor.h"
#include "sockets.h"

using abortguard::Monitor;
using abortguard::mono_ns;
using abortguard::Token;

namespace {

// One registration's record; kept alive until the end of the test so that a
// late (buggy) callback is detected rather than being a use-after-free.
struct Record {
    Token token;
    std::atomic<bool> peer_closed{false};
    std::atomic<bool> removed{false};
    std::atomic<int> calls{0};
};

std::atomic<int> g_violations{0};

void on_abort(void* arg, int) {
    auto* rec = static_cast<Record*>(arg);
    if (rec->removed.load(std::memory_order_acquire))
        g_violations.fetch_add(1);
    // Fired without a cause: a stale event of an earlier watch in this slot.
    if (!rec->peer_closed.load(std::memory_order_acquire))
        g_violations.fetch_add(1);
    rec->calls.fetch_add(1);
}

// Each iteration: a socket pair, a watch on one end, maybe a close of the
// other end (an event races with the unwatch), then unwatch and close: the
// freed fd number is immediately up for grabs by every other thread.
struct Tally {
    std::atomic<int> fired{0};        // watches whose token was aborted
    std::atomic<int> raced{0};        // peer closed, then unwatch at once
    std::atomic<int> raced_fired{0};  // ... and the event won the race
};

void churn_watches(Monitor* monitor, int iterations, unsigned seed,
                   std::vector<std::unique_ptr<Record>>* records, Tally* tally) {
    std::mt19937 rng(seed);
    for (int i = 0; i < iterations; ++i) {
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        records->push_back(std::make_unique<Record>());
        Record* rec = records->back().get();
        Monitor::WatchId id = 0;
        ASSERT_TRUE(monitor->watch(sv[0], 0, &rec->token, on_abort, rec, &id).is_ok());
        const unsigned pick = rng() % 4;
        if (pick != 0) {
            rec->peer_closed.store(true, std::memory_order_release);
            close(sv[1]);
        }
        if (pick == 3)
            rec->token.wait_until(mono_ns() + 1000000000);
        monitor->unwatch(id);
        rec->removed.store(true, std::memory_order_release);
        const bool aborted = rec->token.aborted();
        if (aborted)
            tally->fired.fetch_add(1);
        if (pick == 1 || pick == 2) {
            tally->raced.fetch_add(1);
            if (aborted)
                tally->raced_fired.fetch_add(1);
        }
        close(sv[0]);
        if (pick == 0)
            close(sv[1]);
    }
}

// Steals freshly freed fd numbers and gives them back, so a number the
// workers just closed is soon a pipe, then a socket of another worker.
void churn_fds(std::atomic<bool>* stop) {
    while (!stop->load()) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
            close(p[0]);
            close(p[1]);
        }
    }
}

TEST(MonitorStress, NoCallbackForARemovedWatchWhileFdsAreReused) {
    agtest::raise_fd_limit(4096);
    std::unique_ptr<Monitor> monitor;
    ASSERT_TRUE(Monitor::create(&monitor).is_ok());
    constexpr int kThreads = 4;
    constexpr int kIterations = 10000;
    std::vector<std::vector<std::unique_ptr<Record>>> records(kThreads);
    Tally tally;
    std::atomic<bool> stop{false};
    std::thread fd_thief(churn_fds, &stop);
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t) {
        workers.emplace_back(churn_watches, monitor.get(), kIterations, 1234u + t, &records[t],
                             &tally);
    }
    for (auto& w : workers)
        w.join();
    stop.store(true);
    fd_thief.join();
    monitor.reset();  // joins the monitor thread: no callback can still come

    EXPECT_EQ(g_violations.load(), 0);
    int calls = 0;
    for (auto& per_thread : records) {
        for (auto& rec : per_thread) {
            EXPECT_LE(rec->calls.load(), 1);
            calls += rec->calls.load();
        }
    }
    // Every aborted token got exactly its one callback, and the race was
    // real: of the watches removed right after their peer closed, some had
    // fired and some had not.
    EXPECT_EQ(calls, tally.fired.load());
    EXPECT_GT(tally.raced_fired.load(), 0);
    EXPECT_LT(tally.raced_fired.load(), tally.raced.load());
}

}  // namespace
