// The module's metrics: a stats snapshot (stats.h) as the families of the
// `abortguard-metrics` page, in Prometheus's text format (prometheus.h).
// The names are a contract with users' dashboards and alerts (README.md,
// "Metrics"): apache_abortguard_requests_monitored_total,
// apache_abortguard_aborts_total{reason}, the histograms
// apache_abortguard_detection_seconds, ..._request_to_abort_seconds and
// ..._work_after_abort_seconds, and the rest listed in metrics.cc.
//
// Every label value is bounded: reasons are the Reason names, cleanup
// outcomes two words, handlers the handler table's at most 33 names.
//
// Thread contract: pure functions of their arguments; any thread. May throw
// std::bad_alloc.
#ifndef ABORTGUARD_METRICS_H
#define ABORTGUARD_METRICS_H

#include "prometheus.h"
#include "stats.h"

namespace abortguard {
namespace metrics {

enum class Scope {
    // Everything: for a page the server's own configuration set up.
    kServer,
    // Without what describes other tenants' traffic (requests in flight,
    // wasted work by handler): for a page set up from .htaccess. The
    // counters and histograms, which name nothing, stay server-wide.
    kCountersOnly,
};

void write(const stats::Snapshot& s, Scope scope, prometheus::Sink& sink);

}  // namespace metrics
}  // namespace abortguard

#endif  // ABORTGUARD_METRICS_H
