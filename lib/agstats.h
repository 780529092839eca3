/* The C boundary of the stats block (stats.h), for httpd's glue.
 *
 * The glue maps shared memory in the parent (post_config), formats it once
 * with ag_stats_block_init() or finds it again after a restart with
 * ag_stats_block_open(), and each child attaches to its slot in child_init.
 * From then on the counting calls below add to that slot; before (or
 * without) ag_stats_attach() they do nothing, so they may be called
 * unconditionally.
 *
 * Thread contract: init/open/attach/detach once per process, before or
 * after the threads that count (not concurrently with them); the counting
 * calls, ag_stats_child_exit() and ag_stats_read() from any thread of any
 * process, lock-free; ag_stats_child_exit() is async-signal-safe.
 * Every function is noexcept: nothing here can throw into httpd. */
#ifndef ABORTGUARD_AGSTATS_H
#define ABORTGUARD_AGSTATS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define AG_STATS_NOEXCEPT noexcept
extern "C" {
#else
#define AG_STATS_NOEXCEPT
#endif

/* Mirrors abortguard::stats::Counter; append only, before AG_STAT_COUNT. */
typedef enum {
    AG_STAT_REQUESTS_MONITORED = 0,
    AG_STAT_CLEANUPS_RUN,
    AG_STAT_CLEANUPS_FAILED,
    AG_STAT_CLEANUPS_SLOW,
    AG_STAT_LOCKS_RELEASED_BY_ABORT,
    AG_STAT_STOP_NOTICES,
    AG_STAT_GRACE_ACTIONS,
    AG_STAT_TERMINATIONS,
    AG_STAT_TERMINATIONS_REFUSED,
    AG_STAT_REQUESTS_CUT_AT_EXIT,
    AG_STAT_REQUESTS_SKIPPED,
    AG_STAT_BACKEND_CUTS,       /* proxied requests' backend connections shut down */
    AG_STAT_CLEANUPS_SUCCEEDED, /* cleanups that returned (run = succeeded + failed) */
    AG_STAT_COUNT
} ag_stat_e;

/* Mirrors abortguard::stats::Latency. */
typedef enum {
    AG_LATENCY_DETECTION = 0,    /* kernel event seen -> token fired */
    AG_LATENCY_REQUEST_TO_ABORT, /* request start -> abort detected */
    AG_LATENCY_WORK_AFTER_ABORT, /* abort -> the request's end: work for a client that left */
    AG_LATENCY_COUNT
} ag_latency_e;

/* Aborts are counted by ag_reason_e value, 0..AG_STATS_REASONS-1. */
#define AG_STATS_REASONS 16
/* log2 microsecond buckets; see ag_stats_bucket_upper_us(). */
#define AG_STATS_BUCKETS 32
/* The table of work after abort by handler: 32 names and "(other)". */
#define AG_STATS_HANDLERS 33
#define AG_STATS_HANDLER_NAME 32

typedef struct {
    uint64_t buckets[AG_STATS_BUCKETS];
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
    uint64_t p50_us; /* upper estimates from the buckets */
    uint64_t p99_us;
} ag_stats_histogram;

/* One handler's work after abort (lib/handler_table.h). */
typedef struct {
    char name[AG_STATS_HANDLER_NAME]; /* "(none)": no handler; "(other)": the overflow */
    int other;                        /* the overflow entry: handlers beyond the 32 names */
    uint64_t count;                   /* aborted requests that ended */
    uint64_t sum_us;                  /* their work after the abort */
    uint64_t max_us;
} ag_stats_handler;

/* Everything summed over all slots. */
typedef struct {
    uint64_t counters[AG_STAT_COUNT];
    uint64_t aborts[AG_STATS_REASONS]; /* by ag_reason_e */
    uint64_t aborts_total;
    ag_stats_histogram latency[AG_LATENCY_COUNT];
    unsigned slots;      /* child slots in the block */
    unsigned slots_used; /* ... that a child has attached to */
    uint64_t created_unix;
    uint64_t generations;                         /* times the block was reopened (restarts) */
    uint64_t in_flight;                           /* requests with a state in any child now */
    ag_stats_handler handlers[AG_STATS_HANDLERS]; /* largest sum_us first */
    unsigned nhandlers;
} ag_stats_snapshot;

/* Bytes of shared memory for `nslots` child slots. */
size_t ag_stats_block_size(unsigned nslots) AG_STATS_NOEXCEPT;
/* Formats `mem` (64-byte aligned, ag_stats_block_size(nslots) bytes) as an
 * empty block. Returns 0 or EINVAL. */
int ag_stats_block_init(void* mem, size_t len, unsigned nslots,
                        uint64_t created_unix) AG_STATS_NOEXCEPT;
/* Reuses the block already in `mem` (a restart): 0, or EINVAL when `mem`
 * holds no block of this layout with at least `min_slots` slots. */
int ag_stats_block_open(void* mem, size_t len, unsigned min_slots) AG_STATS_NOEXCEPT;
/* Slots in the block at `mem` (0 if it is none). */
unsigned ag_stats_block_slots(const void* mem) AG_STATS_NOEXCEPT;

/* This process counts into slot `index` of the block at `mem` and records
 * `pid` there; the slot's in-flight gauge starts again from 0 (the process
 * that had the slot is gone, with its requests), except in the last slot,
 * which several processes may share. Returns 0, or EINVAL for a bad block
 * or index. */
int ag_stats_attach(void* mem, unsigned index, int64_t pid) AG_STATS_NOEXCEPT;
/* Counting stops (the calls become no-ops again). */
void ag_stats_detach(void) AG_STATS_NOEXCEPT;
/* The process exits: its requests still in flight leave the gauge. */
void ag_stats_child_exit(void) AG_STATS_NOEXCEPT;

void ag_stats_count(ag_stat_e which, uint64_t n) AG_STATS_NOEXCEPT;
/* One abort with `reason` (an ag_reason_e). */
void ag_stats_abort(int reason) AG_STATS_NOEXCEPT;
/* A duration in nanoseconds (negative counts as 0). */
void ag_stats_latency(ag_latency_e which, int64_t ns) AG_STATS_NOEXCEPT;

/* Conveniences for the request's end (each is the calls above):
 * one request ended; if it was aborted, counts the abort by reason and the
 * time from start_ns to aborted_at_ns (both CLOCK_MONOTONIC). */
void ag_stats_request_end(int aborted, int reason, int64_t start_ns,
                          int64_t aborted_at_ns) AG_STATS_NOEXCEPT;
/* One run of a request's cleanups: adds run, failed, slow and succeeded
 * (run - failed). */
void ag_stats_cleanups(int run, int failed, int slow) AG_STATS_NOEXCEPT;

/* The server-wide bound on terminations (stats.h, Block::permit_terminate):
 * 1 if permitted now, 0 if one was within interval_ns; 1 if `mem` is no
 * block (no bound can be kept, the per-child bound still applies). */
int ag_stats_permit_terminate(void* mem, int64_t now_ns, int64_t interval_ns) AG_STATS_NOEXCEPT;

/* Sums the block at `mem`; zeroes `out` if `mem` is no block. */
void ag_stats_read(const void* mem, ag_stats_snapshot* out) AG_STATS_NOEXCEPT;

/* Exclusive upper bound of bucket `i` in microseconds; 0 for the last,
 * open-ended one. Bucket 0 is [0, 1) us, bucket i is [2^(i-1), 2^i) us. */
uint64_t ag_stats_bucket_upper_us(unsigned i) AG_STATS_NOEXCEPT;

/* Stable lower-case names, for keys ("requests_monitored", ...). */
const char* ag_stat_name(ag_stat_e which) AG_STATS_NOEXCEPT;
const char* ag_latency_name(ag_latency_e which) AG_STATS_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* ABORTGUARD_AGSTATS_H */
