/* The life of one monitored request: watch the client socket (from fixups
 * when AbortGuard On applies, or on demand when a handler uses the API),
 * stop watching when the response's EOS leaves the handler, publish the
 * outcome in log_transaction, run the cleanup registry and release
 * everything when the request pool goes.
 *
 * Thread contract: every function here runs on the request's own thread,
 * except the abort callback it hands the monitor (monitor thread; it only
 * sets c->aborted, which the synchronous unwatch keeps valid), and the
 * read-only queries (ag_request_ctx_get without creating, _aborted,
 * _reason, _aborted_at_ns, _stopping), which an abort callback on the
 * monitor thread may call while the request is live. */
#ifndef AG_REQUEST_H
#define AG_REQUEST_H

#include "httpd.h"
#include "util_filter.h"

#include "ag_config.h"
#include "agcore.h"

/* The name of the output filter that ends the watch at EOS. */
#define AG_EOS_FILTER "ABORTGUARD_EOS"
/* The name of the input filter that reports a tunnel's client read errors. */
#define AG_TUNNEL_FILTER "ABORTGUARD_TUNNEL"

typedef struct ag_request_ctx ag_request_ctx;

/* The request hooks (create_request, fixups, log_transaction) and the
 * filters; from the module's register_hooks. */
void ag_request_register_hooks(apr_pool_t* p);

/* The context of the request `r` belongs to (a subrequest's main request,
 * through internal redirects). With `create`, one is made if missing --
 * unless the request has ended or the caller is a monitor thread: it
 * watches the socket unless AbortGuard Off was given explicitly. NULL when
 * there is none (or out of memory). `ended` (may be NULL) receives whether
 * the request has ended: its context, if any, then only reports the
 * outcome (ag_request_live() is 0). */
ag_request_ctx* ag_request_ctx_get(request_rec* r, int create, int* ended);

/* Until the request pool's teardown ends the request: token, cleanups and
 * locks exist; afterwards only the outcome below is kept. */
int ag_request_live(const ag_request_ctx* ctx);
/* Whether the client went away: the monitor's verdict, or a failed write
 * (c->aborted), which is folded into the token as reason "write" ("h2-reset"
 * on an HTTP/2 stream, where mod_http2 sets it for a reset stream). */
int ag_request_aborted(ag_request_ctx* ctx);
ag_reason_e ag_request_reason(ag_request_ctx* ctx);    /* AG_REASON_NONE while not */
int64_t ag_request_aborted_at_ns(ag_request_ctx* ctx); /* 0 while not */
int ag_request_stopping(const ag_request_ctx* ctx);
/* The core's record of the request: token, cleanups, locks; NULL once the
 * request ended. */
ag_state* ag_request_state(ag_request_ctx* ctx);
const ag_dir_config* ag_request_config(ag_request_ctx* ctx);
/* The request the context belongs to (it owns the pool). */
request_rec* ag_request_owner(ag_request_ctx* ctx);
/* Synchronous socket check; marks the token on a verdict. No-op (returns
 * the current state) when monitoring is forbidden, there is no socket or
 * the request ended. */
int ag_request_probe_socket(ag_request_ctx* ctx);

/* The request is (or is about to become) a tunnel -- a WebSocket upgrade,
 * CONNECT: a half-close is the client ending its direction, which the
 * tunnel forwards; only a reset or an error means it vanished. The socket
 * is watched that way from now on. */
void ag_request_enter_tunnel(ag_request_ctx* ctx);

#endif /* AG_REQUEST_H */
