/* The C boundary of the metrics page (metrics.h): the stats block at `mem`
 * (agstats.h) as Prometheus's text exposition format, version 0.0.4.
 *
 * Thread contract: any thread of any process that has the block mapped,
 * concurrently with counting. Nothing here throws into httpd. */
#ifndef ABORTGUARD_AGMETRICS_H
#define ABORTGUARD_AGMETRICS_H

#include <stddef.h>

#ifdef __cplusplus
#define AG_METRICS_NOEXCEPT noexcept
extern "C" {
#else
#define AG_METRICS_NOEXCEPT
#endif

/* The Content-Type of the page (a contract with scrapers). */
#define AG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4"

/* Everything: a page the server's own configuration files set up. */
#define AG_METRICS_SERVER 0u
/* Without the requests in flight and the wasted work by handler (other
 * tenants' traffic): a page set up from .htaccess. */
#define AG_METRICS_COUNTERS_ONLY 1u

/* Receives the text: once, whole, when it was formatted. */
typedef void ag_metrics_sink_fn(const char* text, size_t len, void* ctx);

/* Formats the block at `mem` (flags: one of the above) and hands the text
 * to sink(ctx). Returns 0; ENOENT when `mem` is NULL (no counters), ENOMEM
 * when out of memory (the sink is not called then). */
int ag_metrics_render(const void* mem, unsigned flags, ag_metrics_sink_fn* sink,
                      void* ctx) AG_METRICS_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* ABORTGUARD_AGMETRICS_H */
