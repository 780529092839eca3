/* The `abortguard-metrics` handler: the module's counters and histograms,
 * summed over all children, in Prometheus's text exposition format
 * (lib/agmetrics.h formats them).
 *
 * Thread contract: hooks only; the handler runs on request threads and
 * reads the shared stats block, which is safe to read concurrently. */
#ifndef AG_METRICS_H
#define AG_METRICS_H

#include "httpd.h"

/* The handler name (a contract: `SetHandler abortguard-metrics`). */
#define AG_METRICS_HANDLER "abortguard-metrics"

/* Registers the handler; from the module's register_hooks (which registers
 * the shared memory's and the trust check's hooks too). */
void ag_metrics_register_hooks(apr_pool_t* p);

#endif /* AG_METRICS_H */
