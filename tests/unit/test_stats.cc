// Stats block: counting into per-process slots with relaxed atomics, sums
// over slots, log2 histograms, and a block shared with a forked child
// through a real MAP_SHARED anonymous mapping (what httpd's apr_shm gives).
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agstats.h"
#include "clock.h"
#include "monitor.h"
#include "request_state.h"
#include "sockets.h"
#include "stats.h"
#include "upstream_cut.h"

namespace abortguard {
namespace stats {
namespace {

// A block in a MAP_SHARED anonymous mapping; unmapped at scope exit.
class SharedBlock {
  public:
    explicit SharedBlock(uint32_t nslots) : len_(Block::bytes_for(nslots)) {
        mem_ = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem_ == MAP_FAILED)
            mem_ = nullptr;
        block_ = Block::format(mem_, len_, nslots, 1700000000);
    }
    ~SharedBlock() {
        set_current(nullptr);
        if (mem_ != nullptr)
            munmap(mem_, len_);
    }
    SharedBlock(const SharedBlock&) = delete;
    SharedBlock& operator=(const SharedBlock&) = delete;

    Block* block() const { return block_; }
    void* mem() const { return mem_; }
    size_t len() const { return len_; }

  private:
    size_t len_;
    void* mem_ = nullptr;
    Block* block_ = nullptr;
};

TEST(Stats, CountingWithoutASlotIsANoOp) {
    set_current(nullptr);
    count(Counter::kRequestsMonitored);
    count_abort(1);
    record(Latency::kDetection, 1000);
    EXPECT_EQ(current(), nullptr);
}

TEST(Stats, BucketBoundaries) {
    EXPECT_EQ(bucket_of(-5), 0u);
    EXPECT_EQ(bucket_of(0), 0u);
    EXPECT_EQ(bucket_of(1), 1u);
    EXPECT_EQ(bucket_of(2), 2u);
    EXPECT_EQ(bucket_of(3), 2u);
    EXPECT_EQ(bucket_of(4), 3u);
    EXPECT_EQ(bucket_of(1023), 10u);
    EXPECT_EQ(bucket_of(1024), 11u);
    EXPECT_EQ(bucket_of(int64_t{1} << 30), kBuckets - 1);
    EXPECT_EQ(bucket_of(INT64_MAX), kBuckets - 1);
    // Every value lies below its bucket's upper bound and at or above the
    // previous bucket's.
    for (int64_t us : {0, 1, 2, 3, 5, 100, 1000, 65535, 65536, 1000000}) {
        const uint32_t b = bucket_of(us);
        EXPECT_LT(static_cast<uint64_t>(us), bucket_upper_us(b)) << us;
        if (b > 0) {
            EXPECT_GE(static_cast<uint64_t>(us), bucket_upper_us(b - 1)) << us;
        }
    }
    EXPECT_EQ(bucket_upper_us(0), 1u);
    EXPECT_EQ(bucket_upper_us(kBuckets - 1), 0u);
}

TEST(Stats, HistogramRecordsMicroseconds) {
    SharedBlock sb(1);
    ASSERT_NE(sb.block(), nullptr);
    set_current(sb.block()->slot(0));
    record(Latency::kDetection, 500);              // 0 us
    record(Latency::kDetection, 1500);             // 1 us
    record(Latency::kDetection, 3000000);          // 3000 us
    record(Latency::kDetection, -7);               // clock skew: 0 us
    record(Latency::kRequestToAbort, 2000000000);  // 2 s
    const Snapshot s = sb.block()->snapshot();
    const HistogramSnapshot& d = s.latency[0];
    EXPECT_EQ(d.count, 4u);
    EXPECT_EQ(d.buckets[0], 2u);
    EXPECT_EQ(d.buckets[1], 1u);
    EXPECT_EQ(d.buckets[bucket_of(3000)], 1u);
    EXPECT_EQ(d.sum_us, 3001u);
    EXPECT_EQ(d.max_us, 3000u);
    EXPECT_EQ(d.quantile_us(0.5), 1u);      // 2nd of 4 lies in [0, 1)
    EXPECT_EQ(d.quantile_us(0.99), 3000u);  // capped at max
    const HistogramSnapshot& r = s.latency[1];
    EXPECT_EQ(r.count, 1u);
    EXPECT_EQ(r.max_us, 2000000u);
    EXPECT_EQ(r.buckets[bucket_of(2000000)], 1u);
}

TEST(Stats, ConcurrentIncrementsFromThreadsAreAllCounted) {
    SharedBlock sb(1);
    ASSERT_NE(sb.block(), nullptr);
    set_current(sb.block()->slot(0));
    constexpr int kThreads = 8;
    constexpr int kEach = 20000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([t] {
            for (int i = 0; i < kEach; ++i) {
                count(Counter::kRequestsMonitored);
                count_abort(1 + static_cast<uint32_t>(t % 2));
                record(Latency::kDetection, int64_t{i} * 1000);
            }
        });
    }
    for (auto& th : threads)
        th.join();
    const Snapshot s = sb.block()->snapshot();
    EXPECT_EQ(s.get(Counter::kRequestsMonitored), uint64_t{kThreads} * kEach);
    EXPECT_EQ(s.aborts[1], uint64_t{kThreads / 2} * kEach);
    EXPECT_EQ(s.aborts[2], uint64_t{kThreads / 2} * kEach);
    EXPECT_EQ(s.aborts_total, uint64_t{kThreads} * kEach);
    EXPECT_EQ(s.latency[0].count, uint64_t{kThreads} * kEach);
    EXPECT_EQ(s.latency[0].max_us, uint64_t{kEach - 1});
    uint64_t in_buckets = 0;
    for (uint64_t b : s.latency[0].buckets)
        in_buckets += b;
    EXPECT_EQ(in_buckets, s.latency[0].count);
}

TEST(Stats, SnapshotSumsAllSlots) {
    SharedBlock sb(4);
    ASSERT_NE(sb.block(), nullptr);
    for (uint32_t i = 0; i < 4; ++i) {
        set_current(sb.block()->slot(i));
        count(Counter::kCleanupsRun, i + 1);
        count_abort(5);
        record(Latency::kRequestToAbort, int64_t{i + 1} * 1000000);
    }
    set_current(nullptr);
    const Snapshot s = sb.block()->snapshot();
    EXPECT_EQ(s.slots, 4u);
    EXPECT_EQ(s.get(Counter::kCleanupsRun), 1u + 2 + 3 + 4);
    EXPECT_EQ(s.aborts[5], 4u);
    EXPECT_EQ(s.latency[1].count, 4u);
    EXPECT_EQ(s.latency[1].max_us, 4000u);
    EXPECT_EQ(s.latency[1].sum_us, 10000u);
    EXPECT_EQ(s.created_unix, 1700000000u);
}

TEST(Stats, UnknownReasonsCountInTheLastEntry) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0));
    count_abort(200);
    EXPECT_EQ(sb.block()->snapshot().aborts[kReasonSlots - 1], 1u);
}

TEST(Stats, FormatRefusesTooLittleMemory) {
    alignas(64) static char small[256];
    EXPECT_EQ(Block::format(small, sizeof small, 100, 0), nullptr);
    EXPECT_EQ(Block::format(nullptr, 0, 0, 0), nullptr);
}

TEST(Stats, OpenFindsTheBlockAgainAndChecksTheLayout) {
    SharedBlock sb(3);
    set_current(sb.block()->slot(2));
    count(Counter::kStopNotices, 7);
    set_current(nullptr);
    Block* again = Block::open(sb.mem(), sb.len(), 3);
    ASSERT_EQ(again, sb.block());
    EXPECT_EQ(again->snapshot().get(Counter::kStopNotices), 7u);
    EXPECT_EQ(again->snapshot().generations, 1u);
    // More slots than it has: refused (the caller formats a new one).
    EXPECT_EQ(Block::open(sb.mem(), sb.len(), 4), nullptr);
    // Garbage: refused.
    alignas(64) static char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    EXPECT_EQ(Block::open(junk, sizeof junk, 1), nullptr);
}

// The httpd case: the parent maps and formats, a forked child counts into its
// slot, the parent reads the child's counts.
TEST(Stats, BlockInSharedMemoryIsSharedWithAForkedChild) {
    SharedBlock sb(2);
    ASSERT_NE(sb.block(), nullptr);
    set_current(sb.block()->slot(0));
    count(Counter::kRequestsMonitored, 5);
    set_current(nullptr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Only async-signal-safe-ish work and _exit: no gtest in the child.
        Block* b = Block::open(sb.mem(), sb.len(), 2);
        if (b == nullptr)
            _exit(2);
        set_current(b->slot(1));
        std::thread helper([] {
            for (int i = 0; i < 1000; ++i)
                count(Counter::kRequestsMonitored);
        });
        for (int i = 0; i < 1000; ++i)
            count(Counter::kRequestsMonitored);
        helper.join();
        count_abort(2);
        record(Latency::kDetection, 40000);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    const Snapshot s = sb.block()->snapshot();
    EXPECT_EQ(s.get(Counter::kRequestsMonitored), 2005u);
    EXPECT_EQ(s.aborts[2], 1u);
    EXPECT_EQ(s.latency[0].count, 1u);
    EXPECT_EQ(s.latency[0].max_us, 40u);
    EXPECT_EQ(s.generations, 1u);  // the child's open()
}

// The C boundary, as the glue uses it.
TEST(Stats, CApiAttachCountRead) {
    const size_t len = ag_stats_block_size(2);
    void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    ASSERT_EQ(ag_stats_block_init(mem, len, 2, 42), 0);
    EXPECT_EQ(ag_stats_block_slots(mem), 2u);
    EXPECT_EQ(ag_stats_block_open(mem, len, 2), 0);
    EXPECT_NE(ag_stats_block_open(mem, len, 3), 0);
    EXPECT_NE(ag_stats_attach(mem, 2, 1), 0);  // no such slot
    ASSERT_EQ(ag_stats_attach(mem, 1, getpid()), 0);
    ag_stats_count(AG_STAT_REQUESTS_MONITORED, 3);
    ag_stats_count(AG_STAT_CLEANUPS_FAILED, 1);
    ag_stats_abort(1);
    ag_stats_abort(-1);  // counts as reason 0, never crashes
    ag_stats_latency(AG_LATENCY_REQUEST_TO_ABORT, 5000000);
    ag_stats_request_end(0, 2, 0, 0);           // not aborted: nothing
    ag_stats_request_end(1, 2, 1000, 3001000);  // rst after 3 ms
    ag_stats_cleanups(3, 1, 0);
    ag_stats_detach();
    ag_stats_count(AG_STAT_REQUESTS_MONITORED, 100);  // detached: ignored

    ag_stats_snapshot snap;
    ag_stats_read(mem, &snap);
    EXPECT_EQ(snap.counters[AG_STAT_REQUESTS_MONITORED], 3u);
    EXPECT_EQ(snap.counters[AG_STAT_CLEANUPS_FAILED], 2u);
    EXPECT_EQ(snap.counters[AG_STAT_CLEANUPS_RUN], 3u);
    EXPECT_EQ(snap.counters[AG_STAT_CLEANUPS_SLOW], 0u);
    EXPECT_EQ(snap.aborts[1], 1u);
    EXPECT_EQ(snap.aborts[2], 1u);
    EXPECT_EQ(snap.aborts_total, 3u);
    EXPECT_EQ(snap.latency[AG_LATENCY_REQUEST_TO_ABORT].count, 2u);
    EXPECT_EQ(snap.latency[AG_LATENCY_REQUEST_TO_ABORT].max_us, 5000u);
    EXPECT_EQ(snap.latency[AG_LATENCY_REQUEST_TO_ABORT].p50_us, 4096u);  // bucket [2048, 4096)
    EXPECT_EQ(snap.slots, 2u);
    EXPECT_EQ(snap.slots_used, 1u);
    EXPECT_EQ(snap.created_unix, 42u);
    EXPECT_EQ(snap.generations, 1u);
    EXPECT_STREQ(ag_stat_name(AG_STAT_LOCKS_RELEASED_BY_ABORT), "locks_released_by_abort");
    EXPECT_STREQ(ag_latency_name(AG_LATENCY_DETECTION), "detection");
    EXPECT_EQ(ag_stats_bucket_upper_us(3), 8u);

    ag_stats_read(nullptr, &snap);
    EXPECT_EQ(snap.slots, 0u);
    munmap(mem, len);
}

// The monitor records how long it took from epoll_wait's return to the
// token being fired, once per abort.
TEST(Stats, MonitorRecordsDetectionLatency) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0));
    std::unique_ptr<Monitor> m;
    ASSERT_TRUE(Monitor::create(&m).is_ok());
    agtest::Listener listener;
    auto [client, server] = listener.connect_pair();
    Token token;
    Monitor::WatchId id = 0;
    ASSERT_TRUE(m->watch(server.get(), 0, &token, nullptr, nullptr, &id).is_ok());
    client.reset();
    EXPECT_TRUE(token.wait_until(mono_ns() + 5000000000));
    m->unwatch(id);
    const Snapshot s = sb.block()->snapshot();
    EXPECT_EQ(s.latency[0].count, 1u);
    EXPECT_LT(s.latency[0].max_us, 1000000u);
}

// Requests in flight: each process adds to its slot, a reader sums the
// slots and counts a negative one (a request that began before its slot was
// reset and ended after) as 0.
TEST(Stats, InFlightGaugeSumsSlotsAndNeverReadsNegative) {
    SharedBlock sb(3);
    ASSERT_NE(sb.block(), nullptr);
    set_current(sb.block()->slot(0));
    in_flight_enter();
    in_flight_enter();
    set_current(sb.block()->slot(1));
    in_flight_enter();
    EXPECT_EQ(sb.block()->snapshot().in_flight, 3u);
    in_flight_leave();
    in_flight_leave();  // slot 1 at -1: counts as 0, not as -1
    EXPECT_EQ(sb.block()->snapshot().in_flight, 2u);
    set_current(sb.block()->slot(0));
    in_flight_leave();
    in_flight_leave();
    EXPECT_EQ(sb.block()->snapshot().in_flight, 0u);
    in_flight_enter();  // balance this process's own count again
    set_current(nullptr);
}

// A request state counts itself from its creation to its destruction.
TEST(Stats, RequestStatesAreInFlightUntilDestroyed) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0));
    {
        RequestState a("/a", "h", 0, 1);
        RequestState b("/b", "h", 0, 1);
        EXPECT_EQ(sb.block()->snapshot().in_flight, 2u);
    }
    EXPECT_EQ(sb.block()->snapshot().in_flight, 0u);
}

// The C boundary: a new child in a slot starts its gauge from 0 (its
// predecessor's requests went with it), except in the shared spare slot;
// an exiting child takes back what it still counts.
TEST(Stats, AttachResetsTheGaugeAndExitTakesBackTheProcesssRequests) {
    set_current(nullptr);
    forget_in_flight();  // this process's own count starts from 0 here
    SharedBlock sb(3);
    Slot* s0 = sb.block()->slot(0);
    Slot* spare = sb.block()->slot(2);
    s0->in_flight.store(5);     // left by a child that died with 5 requests
    spare->in_flight.store(2);  // another live child's, in the shared slot
    ASSERT_EQ(ag_stats_attach(sb.mem(), 0, 100), 0);
    ASSERT_EQ(ag_stats_attach(sb.mem(), 2, 101), 0);
    EXPECT_EQ(s0->in_flight.load(), 0);
    EXPECT_EQ(spare->in_flight.load(), 2);
    ASSERT_EQ(ag_stats_attach(sb.mem(), 0, 102), 0);
    auto* left = new RequestState("/torn-down-at-exit", "h");  // never destroyed by the "exit"
    RequestState ended("/ended", "h");
    EXPECT_EQ(sb.block()->snapshot().in_flight, 2u + 2u);
    ag_stats_child_exit();
    EXPECT_EQ(s0->in_flight.load(), 0);
    EXPECT_EQ(sb.block()->snapshot().in_flight, 2u);
    ag_stats_detach();
    delete left;  // counting stopped: no effect on the block
    EXPECT_EQ(sb.block()->snapshot().in_flight, 2u);
}

// An aborted request's end records how long it went on after the abort, as
// wasted work of its handler; a request that was not aborted records none,
// and a second run of the cleanups (after a terminate's) records nothing
// more.
TEST(Stats, RequestEndRecordsWorkAfterAbortByHandler) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0), sb.block()->handlers());
    {
        RequestState fine("/fine", "cgi-script");
        fine.run_cleanups(false, 0);
    }
    const int64_t t0 = mono_ns();
    {
        RequestState slow("/slow", "cgi-script");
        ASSERT_TRUE(slow.token().abort(Reason::kFin, t0 - 250000000));  // 250 ms ago
        slow.run_cleanups(true, 0);
        slow.run_cleanups(true, 0);
    }
    const int64_t elapsed_us = (mono_ns() - t0) / 1000;
    const Snapshot s = sb.block()->snapshot();
    const HistogramSnapshot& w = s.latency[static_cast<uint32_t>(Latency::kWorkAfterAbort)];
    EXPECT_EQ(w.count, 1u);
    EXPECT_GE(w.sum_us, 250000u);
    EXPECT_LE(w.sum_us, 250000u + static_cast<uint64_t>(elapsed_us));
    ASSERT_EQ(s.nhandlers, 1u);
    EXPECT_STREQ(s.handlers[0].name, "cgi-script");
    EXPECT_EQ(s.handlers[0].count, 1u);
    EXPECT_EQ(s.handlers[0].sum_us, w.sum_us);
    set_current(nullptr);
}

// A backend cut counts once, and only when a socket was shut down.
TEST(Stats, BackendCutsAreCounted) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0));
    agtest::Listener listener;
    auto [proxy, backend] = listener.connect_pair();
    Token token;
    {
        UpstreamCut cut(token);
        UpstreamCut::ArmId id = 0;
        ASSERT_TRUE(cut.arm(proxy.get(), nullptr, nullptr, &id).is_ok());
        EXPECT_EQ(sb.block()->snapshot().get(Counter::kBackendCuts), 0u);
        token.abort(Reason::kRst, mono_ns());
        EXPECT_TRUE(cut.disarm(id));
    }
    Token other;
    {
        UpstreamCut never(other);  // armed, not aborted: no cut
        UpstreamCut::ArmId id = 0;
        ASSERT_TRUE(never.arm(backend.get(), nullptr, nullptr, &id).is_ok());
        EXPECT_FALSE(never.disarm(id));
    }
    EXPECT_EQ(sb.block()->snapshot().get(Counter::kBackendCuts), 1u);
    set_current(nullptr);
}

// Cleanups by outcome, counted where they are, so "succeeded" never drops.
TEST(Stats, CleanupsSucceededIsRunMinusFailed) {
    SharedBlock sb(1);
    set_current(sb.block()->slot(0));
    ag_stats_cleanups(4, 1, 0);
    ag_stats_cleanups(2, 2, 1);
    ag_stats_cleanups(0, 0, 0);
    const Snapshot s = sb.block()->snapshot();
    EXPECT_EQ(s.get(Counter::kCleanupsRun), 6u);
    EXPECT_EQ(s.get(Counter::kCleanupsFailed), 3u);
    EXPECT_EQ(s.get(Counter::kCleanupsSucceeded), 3u);
    set_current(nullptr);
}

}  // namespace
}  // namespace stats
}  // namespace abortguard
