// Stats: server-wide counters and latency histograms in memory shared by all
// of httpd's children, so one status page covers every process.
//
// The memory is the caller's (httpd's glue maps it in the parent before the
// children fork); this file only gives it a fixed layout: a header, then one
// Slot per child process. A child counts into its own slot with relaxed
// atomic increments: no lock on the request path, and no cache line bounced
// between processes. A reader sums the slots into a Snapshot. The counts are
// monotonic; a reader that wants rates subtracts two snapshots.
//
// A block is reused across httpd's graceful restarts and child replacements:
// a new child in a slot adds to what its predecessor counted. The layout is
// versioned (kLayoutVersion): memory formatted by another layout is refused,
// not misread.
//
// Besides counters and histograms the block keeps two things that are not
// monotonic: a gauge of the requests in flight (each slot's process adds
// itself; see in_flight_enter()) and the table of work after abort by
// handler name (handler_table.h), one for the whole block.
//
// Thread contract:
//  - format()/attach-by-layout (Block::open) and set_current(): one thread,
//    before the threads that count start (httpd: post_config, child_init).
//  - count()/count_abort()/record()/record_work_after_abort() and the
//    in-flight calls: any thread, including the monitor thread, and, across
//    processes, any child; lock-free, noexcept and async-signal-safe.
//  - Block::snapshot(): any thread or process, concurrently with counting;
//    each value is read atomically, the set of them is not one instant.
#ifndef ABORTGUARD_STATS_H
#define ABORTGUARD_STATS_H

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "handler_table.h"

namespace abortguard {
namespace stats {

// Values are part of the C boundary (agstats.h mirrors them); append only,
// before kCounterCount.
enum class Counter : uint32_t {
    kRequestsMonitored = 0,
    kCleanupsRun,
    kCleanupsFailed,
    kCleanupsSlow,
    kLocksReleasedByAbort,
    kStopNotices,
    kGraceActions,
    kTerminations,       // a child ended a hung handler (AbortGuardGraceAction terminate)
    kTerminateRefused,   // ... that the rate bound refused
    kRequestsCutAtExit,  // requests still running when a terminating child exited
    kRequestsSkipped,    // never handed to their handler: the client had left
    kBackendCuts,        // a proxied request's backend connection shut down (upstream_cut.h)
    kCleanupsSucceeded,  // cleanups that returned: counted at the source, not as run minus
                         // failed, so that a reader between the two adds never sees it drop
};
constexpr uint32_t kCounterCount = 13;
// Reserved room, so counters can be added without a new layout version.
constexpr uint32_t kCounterSlots = 16;

enum class Latency : uint32_t {
    kDetection = 0,   // kernel event seen (epoll_wait returned) -> token fired
    kRequestToAbort,  // request start -> abort detected
    kWorkAfterAbort,  // abort -> the request's end (its cleanups begin): work for nobody
};
constexpr uint32_t kLatencyCount = 3;

// Aborts are counted by Reason value (reason.h); room for reasons to come
// (h2-reset, server-stop, ...). Larger values count in the last entry.
constexpr uint32_t kReasonSlots = 16;

// log2 buckets of microseconds: bucket 0 holds [0, 1) us, bucket i (1 <= i
// < kBuckets - 1) holds [2^(i-1), 2^i) us, the last one everything from
// 2^(kBuckets-2) us (about 18 minutes) on.
constexpr uint32_t kBuckets = 32;

// Which bucket `us` microseconds fall into.
uint32_t bucket_of(int64_t us) noexcept;
// The exclusive upper bound of bucket `i` in microseconds; 0 for the last,
// open-ended bucket.
uint64_t bucket_upper_us(uint32_t i) noexcept;

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "shared-memory counters need address-free (lock-free) atomics");

struct Histogram {
    std::atomic<uint64_t> buckets[kBuckets];
    std::atomic<uint64_t> count;
    std::atomic<uint64_t> sum_us;
    std::atomic<uint64_t> max_us;
};

// One child process's counters. Aligned so that two children never write
// the same cache line.
struct alignas(64) Slot {
    std::atomic<uint64_t> pid;  // the last process that attached (0: never)
    // Requests in flight in that process: a gauge, so it may read negative
    // for a moment (a request that began before the slot was reset ends
    // after); a reader counts a negative slot as 0.
    std::atomic<int64_t> in_flight;
    std::atomic<uint64_t> counters[kCounterSlots];
    std::atomic<uint64_t> aborts[kReasonSlots];
    Histogram latency[kLatencyCount];
};

// A histogram summed over all slots, plain values.
struct HistogramSnapshot {
    uint64_t buckets[kBuckets] = {};
    uint64_t count = 0;
    uint64_t sum_us = 0;
    uint64_t max_us = 0;
    // An upper estimate of the q-quantile (0 < q <= 1): the upper bound of
    // the bucket it falls in (capped at max_us); 0 when empty.
    uint64_t quantile_us(double q) const noexcept;
};

struct Snapshot {
    uint64_t counters[kCounterSlots] = {};
    uint64_t aborts[kReasonSlots] = {};
    uint64_t aborts_total = 0;
    HistogramSnapshot latency[kLatencyCount];
    uint32_t slots = 0;       // slots in the block
    uint32_t slots_used = 0;  // slots a process has attached to
    uint64_t created_unix = 0;
    uint64_t generations = 0;  // times the block was reopened (httpd: restarts)
    uint64_t in_flight = 0;    // summed over slots, each counted as at least 0
    // Work after abort by handler: merged by name, largest sum first.
    HandlerTotals handlers[HandlerTable::kEntries + 1];
    uint32_t nhandlers = 0;

    uint64_t get(Counter c) const noexcept { return counters[static_cast<uint32_t>(c)]; }
};

// A view of caller-provided memory as a stats block. Never owns the memory;
// constructed and destroyed in place by format()/open(), it has no state of
// its own beyond that memory.
class Block {
  public:
    // Bytes needed for `nslots` slots (header and handler table included).
    static size_t bytes_for(uint32_t nslots) noexcept;

    // Formats `len` bytes at `mem` (64-byte aligned, at least
    // bytes_for(nslots)) as an empty block stamped with `created_unix`.
    // nullptr if it does not fit.
    static Block* format(void* mem, size_t len, uint32_t nslots, uint64_t created_unix) noexcept;

    // The block already in `mem`, if it has this layout and at least
    // `min_slots` slots; nullptr otherwise (another version, or garbage).
    // Counts one more generation.
    static Block* open(void* mem, size_t len, uint32_t min_slots) noexcept;

    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;

    uint32_t nslots() const noexcept { return nslots_; }
    // nullptr when i >= nslots().
    Slot* slot(uint32_t i) noexcept;
    HandlerTable* handlers() noexcept;

    Snapshot snapshot() const noexcept;

    // The server-wide bound on terminations: true (and the time recorded)
    // when none was permitted in the `interval_ns` before `now_ns`
    // (CLOCK_MONOTONIC, which every process of the machine shares).
    bool permit_terminate(int64_t now_ns, int64_t interval_ns) noexcept;

  private:
    Block(uint32_t nslots, uint64_t created_unix) noexcept;
    const Slot* slots() const noexcept;
    const HandlerTable* handlers() const noexcept;

    static constexpr uint64_t kMagic = 0x5354534741424741ull;  // "AGBAGSTS"
    // 2: the handler table before the slots, Slot::in_flight, a third
    // histogram.
    static constexpr uint32_t kLayoutVersion = 2;

    uint64_t magic_;
    uint32_t version_;
    uint32_t nslots_;
    uint64_t slot_size_;
    uint64_t created_unix_;
    std::atomic<uint64_t> generations_;
    std::atomic<int64_t> last_terminate_ns_;  // 0: never
};

// The slot this process counts into, and the block's handler table;
// nullptr (the default) makes every counting call a no-op, so code under
// test counts nothing by default.
void set_current(Slot* slot, HandlerTable* handlers = nullptr) noexcept;
Slot* current() noexcept;

void count(Counter c, uint64_t n = 1) noexcept;
// `reason` is a Reason value.
void count_abort(uint32_t reason) noexcept;
// A negative duration (clock skew between two readings) counts as 0.
void record(Latency which, int64_t ns) noexcept;
// A request of `handler` ended `ns` after its client left: the
// kWorkAfterAbort histogram and the handler table.
void record_work_after_abort(const char* handler, int64_t ns) noexcept;

// The requests-in-flight gauge: a request state was created / destroyed in
// this process. The process also keeps its own count, so that at its exit
// forget_in_flight() can take back what it still holds from its slot
// (requests that an exit tears down without ending them).
void in_flight_enter() noexcept;
void in_flight_leave() noexcept;
void forget_in_flight() noexcept;

}  // namespace stats
}  // namespace abortguard

#endif  // ABORTGUARD_STATS_H
