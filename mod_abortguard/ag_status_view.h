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

typedef struct {
    int have_counters; /* the shared memory exists */
    ag_stats_snapshot stats;
    apr_array_header_t* flight; /* of ag_inflight_info, oldest first, at most
                                   AG_STATUS_MAX_INFLIGHT */
    int inflight_total;         /* in flight in scope, shown or not */
    int vhost_only;             /* only the asking virtual host's requests */
    int64_t now_ns;             /* CLOCK_MONOTONIC when gathered */
    apr_time_t now;             /* wall clock, for display */
    pid_t pid;                  /* the serving child */
    int generation;             /* httpd's configuration generation */
} ag_status_view;

/* The page lists at most this many in-flight requests (the oldest): a
 * scrape must not allocate without limit, least of all under the in-flight
 * table's locks. */
#define AG_STATUS_MAX_INFLIGHT 100

ag_status_view* ag_status_view_gather(request_rec* r);

/* The renderers (ag_status_render.c). `prefix` starts every ?auto key. */
void ag_status_render_html(request_rec* r, const ag_status_view* v);
void ag_status_render_auto(request_rec* r, const ag_status_view* v, const char* prefix,
                           int with_buckets);
void ag_status_render_json(request_rec* r, const ag_status_view* v);
/* The section inside mod_status's own HTML page. */
void ag_status_render_section(request_rec* r, const ag_status_view* v);

#endif /* AG_STATUS_VIEW_H */
