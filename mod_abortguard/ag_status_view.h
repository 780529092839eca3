/* What the status outputs show, gathered once per request: the counters
 * summed over all children and a copy of the serving child's in-flight
 * monitored requests. The renderers (ag_status_render.c) only format it.
 *
 * Thread contract: a view belongs to one request thread. */
#ifndef AG_STATUS_VIEW_H
#define AG_STATUS_VIEW_H

#include "httpd.h"

#include "agcore.h"
#include "agstats.h"

#ifndef AG_HAVE_INFLIGHT
/* Until the core's in-flight table lands (lib/agcore.h), a local mirror of
 * its record, so the renderers compile; the table then reads as "not
 * available". Remove once agcore.h defines AG_HAVE_INFLIGHT. */
typedef struct {
    int64_t start_ns;
    int64_t aborted_at_ns;
    int reason;
    char uri[128];
    char handler[48];
    int nlocks;
    struct {
        char path[128];
        int exclusive;
        int64_t since_ns;
    } locks[4];
} ag_inflight_info;
#endif

typedef struct {
    int have_counters; /* the shared memory exists */
    ag_stats_snapshot stats;
    int have_inflight;          /* the core can list in-flight requests */
    apr_array_header_t* flight; /* of ag_inflight_info, oldest first */
    int64_t now_ns;             /* CLOCK_MONOTONIC when gathered */
    apr_time_t now;             /* wall clock, for display */
    pid_t pid;                  /* the serving child */
    int generation;             /* httpd's configuration generation */
} ag_status_view;

ag_status_view* ag_status_view_gather(request_rec* r);

/* Labels shared by the outputs. "Requests monitored", ... */
const char* ag_status_counter_label(ag_stat_e which);
/* "Detection latency", "Request to abort latency" */
const char* ag_status_latency_label(ag_latency_e which);
/* What the latency measures, for humans. */
const char* ag_status_latency_meaning(ag_latency_e which);
/* The reason's name for reasons the core knows ("fin", ...), NULL for an
 * unused entry; the last entry collects unknown reasons ("other"). */
const char* ag_status_reason_name(int reason);

/* The renderers (ag_status_render.c). `prefix` starts every ?auto key. */
void ag_status_render_html(request_rec* r, const ag_status_view* v);
void ag_status_render_auto(request_rec* r, const ag_status_view* v, const char* prefix,
                           int with_buckets);
void ag_status_render_json(request_rec* r, const ag_status_view* v);
/* The section inside mod_status's own HTML page. */
void ag_status_render_section(request_rec* r, const ag_status_view* v);

#endif /* AG_STATUS_VIEW_H */
