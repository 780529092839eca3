// HandlerTable: work done after the client left, by handler name, in memory
// shared by all of httpd's children (it lives in the stats block, stats.h),
// so an admin can see which application keeps working for departed clients.
//
// The table is bounded -- kEntries named entries plus one "(other)" entry
// that takes every handler once the named ones are taken -- because the
// names become label values of the metrics page, where an unbounded set
// would be a cardinality leak (a tenant's .htaccess may name handlers).
//
// An entry is claimed without a lock: a compare-and-swap from kFree to
// kClaimed, then the name is copied, then kPublished is stored (release);
// readers and other writers look at the name only after seeing kPublished
// (acquire). A writer that meets an entry being claimed passes it by, so two
// processes may publish the same name twice; the snapshot merges entries by
// name. A process killed in the middle of a claim leaves one entry unusable
// for the life of the block, nothing worse.
//
// Thread contract: record() from any thread of any process, lock-free and
// noexcept; snapshot() likewise, concurrently with record() (each value is
// read atomically, the set of them is not one instant).
#ifndef ABORTGUARD_HANDLER_TABLE_H
#define ABORTGUARD_HANDLER_TABLE_H

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace abortguard {
namespace stats {

// RequestState keeps 31 bytes of a handler's name; so does the table.
constexpr size_t kHandlerNameBytes = 32;

struct alignas(64) HandlerEntry {
    std::atomic<uint32_t> state;
    char name[kHandlerNameBytes];  // written once, before kPublished
    std::atomic<uint64_t> count;   // aborted requests of this handler
    std::atomic<uint64_t> sum_us;  // their work after the abort
    std::atomic<uint64_t> max_us;
};

// One handler's totals, plain values.
struct HandlerTotals {
    char name[kHandlerNameBytes] = {};
    bool other = false;  // the overflow entry, "(other)"
    uint64_t count = 0;
    uint64_t sum_us = 0;
    uint64_t max_us = 0;
};

struct HandlerTable {
    static constexpr uint32_t kEntries = 32;
    // Names given to what has no name of its own (label values, too).
    static constexpr const char* kNoHandler = "(none)";
    static constexpr const char* kOther = "(other)";

    HandlerEntry entries[kEntries];
    HandlerEntry other;

    // Adds one request of `handler` (NULL or "" count as kNoHandler; longer
    // names are cut to kHandlerNameBytes - 1 bytes) that worked `us`
    // microseconds after its client left.
    void record(const char* handler, uint64_t us) noexcept;

    // At most kEntries + 1 totals, merged by name, largest sum first, the
    // overflow entry included when it counted anything. Returns how many.
    uint32_t snapshot(HandlerTotals* out) const noexcept;
};

}  // namespace stats
}  // namespace abortguard

#endif  // ABORTGUARD_HANDLER_TABLE_H
