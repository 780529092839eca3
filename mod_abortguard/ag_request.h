/* The life of one monitored request: watch the client socket from fixups,
 * stop watching when the response's EOS leaves the handler, publish the
 * outcome in log_transaction, release everything with the request pool.
 *
 * Thread contract: every function here runs on the request's own thread,
 * except the abort callback it hands the monitor (monitor thread; it only
 * sets c->aborted, which the synchronous unwatch keeps valid). */
#ifndef AG_REQUEST_H
#define AG_REQUEST_H

#include "httpd.h"
#include "util_filter.h"

#include "agcore.h"

/* The name of the output filter that ends the watch at EOS. */
#define AG_EOS_FILTER "ABORTGUARD_EOS"

/* The child's monitor, or NULL when it could not start (set in child_init). */
void ag_request_set_monitor(ag_monitor* monitor);

int ag_request_fixups(request_rec* r);
int ag_request_log_transaction(request_rec* r);
apr_status_t ag_request_eos_filter(ap_filter_t* f, apr_bucket_brigade* bb);

#endif /* AG_REQUEST_H */
