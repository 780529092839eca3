// extern "C" wrappers of stats.h. Nothing below throws (the C++ side is
// noexcept throughout). agstats.h declares every wrapper noexcept, so a
// definition must say so too, and an exception from a future change would
// end in std::terminate here rather than unwind through httpd's C frames.
#include "agstats.h"

#include <errno.h>
#include <string.h>

#include "stats.h"

namespace st = abortguard::stats;

static_assert(AG_STAT_COUNT == st::kCounterCount, "agstats.h and stats.h disagree");
static_assert(AG_STAT_COUNT <= st::kCounterSlots, "too many counters for the layout");
static_assert(AG_LATENCY_COUNT == st::kLatencyCount, "agstats.h and stats.h disagree");
static_assert(AG_STATS_REASONS == st::kReasonSlots, "agstats.h and stats.h disagree");
static_assert(AG_STATS_BUCKETS == st::kBuckets, "agstats.h and stats.h disagree");
static_assert(AG_STATS_HANDLERS == st::HandlerTable::kEntries + 1,
              "agstats.h and stats.h disagree");
static_assert(AG_STATS_HANDLER_NAME == st::kHandlerNameBytes, "agstats.h and stats.h disagree");

namespace {

// Blocks come from ag_stats_block_init/open; a header that does not check
// out is refused by Block::open() itself, so this cast is only a view.
st::Block* as_block(void* mem) noexcept {
    return static_cast<st::Block*>(mem);
}

void copy_histogram(const st::HistogramSnapshot& in, ag_stats_histogram* out) noexcept {
    memcpy(out->buckets, in.buckets, sizeof(out->buckets));
    out->count = in.count;
    out->sum_us = in.sum_us;
    out->max_us = in.max_us;
    out->p50_us = in.quantile_us(0.50);
    out->p99_us = in.quantile_us(0.99);
}

void copy_handler(const st::HandlerTotals& in, ag_stats_handler* out) noexcept {
    memcpy(out->name, in.name, sizeof(out->name));
    out->name[sizeof(out->name) - 1] = '\0';
    out->other = in.other ? 1 : 0;
    out->count = in.count;
    out->sum_us = in.sum_us;
    out->max_us = in.max_us;
}

}  // namespace

extern "C" {

size_t ag_stats_block_size(unsigned nslots) noexcept {
    return st::Block::bytes_for(nslots);
}

int ag_stats_block_init(void* mem, size_t len, unsigned nslots, uint64_t created_unix) noexcept {
    return st::Block::format(mem, len, nslots, created_unix) != nullptr ? 0 : EINVAL;
}

int ag_stats_block_open(void* mem, size_t len, unsigned min_slots) noexcept {
    return st::Block::open(mem, len, min_slots) != nullptr ? 0 : EINVAL;
}

unsigned ag_stats_block_slots(const void* mem) noexcept {
    return mem != nullptr ? static_cast<const st::Block*>(mem)->nslots() : 0;
}

int ag_stats_attach(void* mem, unsigned index, int64_t pid) noexcept {
    st::Block* block = mem != nullptr ? as_block(mem) : nullptr;
    st::Slot* slot = block != nullptr ? block->slot(index) : nullptr;
    if (slot == nullptr)
        return EINVAL;
    slot->pid.store(static_cast<uint64_t>(pid), std::memory_order_relaxed);
    if (index + 1 < block->nslots())
        slot->in_flight.store(0, std::memory_order_relaxed);
    st::set_current(slot, block->handlers());
    return 0;
}

void ag_stats_detach(void) noexcept {
    st::set_current(nullptr);
}

void ag_stats_child_exit(void) noexcept {
    st::forget_in_flight();
}

void ag_stats_count(ag_stat_e which, uint64_t n) noexcept {
    st::count(static_cast<st::Counter>(which), n);
}

void ag_stats_abort(int reason) noexcept {
    st::count_abort(reason < 0 ? 0u : static_cast<uint32_t>(reason));
}

void ag_stats_latency(ag_latency_e which, int64_t ns) noexcept {
    st::record(static_cast<st::Latency>(which), ns);
}

void ag_stats_request_end(int aborted, int reason, int64_t start_ns,
                          int64_t aborted_at_ns) noexcept {
    if (!aborted)
        return;
    ag_stats_abort(reason);
    ag_stats_latency(AG_LATENCY_REQUEST_TO_ABORT, aborted_at_ns - start_ns);
}

void ag_stats_cleanups(int run, int failed, int slow) noexcept {
    if (run > 0)
        ag_stats_count(AG_STAT_CLEANUPS_RUN, static_cast<uint64_t>(run));
    if (failed > 0)
        ag_stats_count(AG_STAT_CLEANUPS_FAILED, static_cast<uint64_t>(failed));
    if (slow > 0)
        ag_stats_count(AG_STAT_CLEANUPS_SLOW, static_cast<uint64_t>(slow));
    if (run > failed && failed >= 0)
        ag_stats_count(AG_STAT_CLEANUPS_SUCCEEDED, static_cast<uint64_t>(run - failed));
}

void ag_stats_read(const void* mem, ag_stats_snapshot* out) noexcept {
    memset(out, 0, sizeof(*out));
    if (mem == nullptr)
        return;
    const st::Snapshot s = static_cast<const st::Block*>(mem)->snapshot();
    memcpy(out->counters, s.counters, sizeof(out->counters));
    memcpy(out->aborts, s.aborts, sizeof(out->aborts));
    out->aborts_total = s.aborts_total;
    for (unsigned l = 0; l < AG_LATENCY_COUNT; ++l)
        copy_histogram(s.latency[l], &out->latency[l]);
    out->slots = s.slots;
    out->slots_used = s.slots_used;
    out->created_unix = s.created_unix;
    out->generations = s.generations;
    out->in_flight = s.in_flight;
    out->nhandlers = s.nhandlers;
    for (unsigned i = 0; i < s.nhandlers && i < AG_STATS_HANDLERS; ++i)
        copy_handler(s.handlers[i], &out->handlers[i]);
}

int ag_stats_permit_terminate(void* mem, int64_t now_ns, int64_t interval_ns) noexcept {
    auto* b = static_cast<st::Block*>(mem);
    if (b == nullptr || ag_stats_block_slots(mem) == 0)
        return 1;
    return b->permit_terminate(now_ns, interval_ns) ? 1 : 0;
}

uint64_t ag_stats_bucket_upper_us(unsigned i) noexcept {
    return st::bucket_upper_us(i);
}

const char* ag_stat_name(ag_stat_e which) noexcept {
    switch (which) {
        case AG_STAT_REQUESTS_MONITORED:
            return "requests_monitored";
        case AG_STAT_CLEANUPS_RUN:
            return "cleanups_run";
        case AG_STAT_CLEANUPS_FAILED:
            return "cleanups_failed";
        case AG_STAT_CLEANUPS_SLOW:
            return "cleanups_slow";
        case AG_STAT_LOCKS_RELEASED_BY_ABORT:
            return "locks_released_by_abort";
        case AG_STAT_STOP_NOTICES:
            return "stop_notices";
        case AG_STAT_GRACE_ACTIONS:
            return "grace_actions";
        case AG_STAT_TERMINATIONS:
            return "terminations";
        case AG_STAT_TERMINATIONS_REFUSED:
            return "terminations_refused";
        case AG_STAT_REQUESTS_CUT_AT_EXIT:
            return "requests_cut_at_exit";
        case AG_STAT_REQUESTS_SKIPPED:
            return "requests_skipped";
        case AG_STAT_BACKEND_CUTS:
            return "backend_cuts";
        case AG_STAT_CLEANUPS_SUCCEEDED:
            return "cleanups_succeeded";
        case AG_STAT_COUNT:
            break;
    }
    return "unknown";
}

const char* ag_latency_name(ag_latency_e which) noexcept {
    switch (which) {
        case AG_LATENCY_DETECTION:
            return "detection";
        case AG_LATENCY_REQUEST_TO_ABORT:
            return "request_to_abort";
        case AG_LATENCY_WORK_AFTER_ABORT:
            return "work_after_abort";
        case AG_LATENCY_COUNT:
            break;
    }
    return "unknown";
}

}  // extern "C"
