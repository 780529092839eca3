#include "ag_request.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "ag_child.h"
#include "ag_h2.h"
#include "ag_lifecycle.h"
#include "agstats.h"
#include "ag_private.h"
#include "mod_abortguard.h" /* the public names implemented here */

struct ag_request_ctx {
    request_rec* owner; /* owns the pool everything below lives in */
    const ag_dir_config* conf;
    ag_state* state;     /* token, cleanups, locks: core-owned; NULL once ended */
    ag_monitor* monitor; /* what the watches below were made with */
    ag_watch_id watch;   /* 0 once the socket is no longer watched */
    unsigned watch_flags;
    int forbidden;           /* AbortGuard Off: failed writes only */
    int response_done;       /* EOS has passed: the handler's output is complete */
    int tunnel;              /* mod_proxy made it a tunnel (101, CONNECT) */
    int logged;              /* log_transaction ran: the request has ended for the API */
    int skipped;             /* AbortGuardSkipAbandoned kept it from its handler */
    ap_filter_t* tunnel_in;  /* reports the tunnel's client read errors; NULL when none */
    ap_filter_t* tunnel_out; /* ... and its client write errors */

    /* The outcome, kept for calls after the end (from pool cleanups). */
    int final_aborted;
    int final_stopping;
    ag_reason_e final_reason;
    int64_t final_aborted_at_ns;

    ag_watch_id stream_watch;     /* HTTP/2: the stream's aborted flag; 0 when none */
    apr_os_sock_t keepalive_fd;   /* AbortGuardKeepAlive: restore on this socket */
    ag_keepalive_saved keepalive; /* saved.saved 0: nothing to restore */
};

/* The conn_config mark of a connection one of whose requests was watched. */
static char watched_before;
/* The request_config mark of a request that ended without a context: a
 * late first API call (from a pool cleanup) must not start monitoring a
 * request whose end has passed. */
static char ended_unwatched;
/* Written in register_hooks: saves a lookup by name per request. */
static ap_filter_rec_t* eos_filter;
static ap_filter_rec_t* tunnel_filter;
static ap_filter_rec_t* tunnel_out_filter_rec;

/* Monitor thread. The conn_rec outlives the watch: unwatch is synchronous
 * and runs before the request pool (let alone the connection's) is gone. */
static void mark_connection(void* arg, int reason) {
    conn_rec* c = arg;
    (void)reason;
    __atomic_store_n(&c->aborted, 1, __ATOMIC_RELAXED);
}

/* On the thread that aborts the state (the monitor's, for a stop notice):
 * AbortGuardStopAborts makes a stop notice an abort like a client's, which
 * marks the connection as the watch's callback does for the others. */
static void mark_connection_on_stop(void* arg, int reason) {
    if (reason == AG_REASON_SERVER_STOP) {
        mark_connection(arg, reason);
    }
}

/* A tunnel reads the client itself, and may read a reset's error before the
 * monitor sees it (the error is then gone from the socket): a read that
 * fails for another reason than the end of the client's direction is the
 * client vanishing. On the request's thread, while the tunnel runs. */
static apr_status_t tunnel_in_filter(ap_filter_t* f, apr_bucket_brigade* bb, ap_input_mode_t mode,
                                     apr_read_type_e block, apr_off_t readbytes) {
    ag_request_ctx* ctx = f->ctx;
    apr_status_t rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EOF(rv) && !APR_STATUS_IS_EAGAIN(rv) &&
        ctx->state != NULL) {
        ag_state_abort(ctx->state, APR_STATUS_IS_ECONNRESET(rv)  ? AG_REASON_RST
                                   : APR_STATUS_IS_ETIMEDOUT(rv) ? AG_REASON_TIMEOUT
                                                                 : AG_REASON_ERROR);
    }
    return rv;
}

/* ... and may write to the client before anyone reads the reset: the
 * abort comes first, so that the proxy's complaint about the failed write
 * goes to the request's quietened log copy (ag_proxy.c). */
static apr_status_t tunnel_out_filter(ap_filter_t* f, apr_bucket_brigade* bb) {
    ag_request_ctx* ctx = f->ctx;
    apr_bucket* b;
    apr_status_t rv;
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        if (AP_BUCKET_IS_EOR(b)) {
            /* Passing it ends the request and frees ctx: step aside first. */
            ctx->tunnel_out = NULL;
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
    }
    rv = ap_pass_brigade(f->next, bb);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv) && ctx->state != NULL) {
        ag_state_abort(ctx->state, APR_STATUS_IS_ECONNRESET(rv) || APR_STATUS_IS_EPIPE(rv)
                                       ? AG_REASON_RST
                                       : AG_REASON_WRITE);
    }
    return rv;
}

static void stop_tunnel_filter(ag_request_ctx* ctx) {
    if (ctx->tunnel_in != NULL) {
        ap_remove_input_filter(ctx->tunnel_in);
        ctx->tunnel_in = NULL;
    }
    if (ctx->tunnel_out != NULL) {
        ap_remove_output_filter(ctx->tunnel_out);
        ctx->tunnel_out = NULL;
    }
}

/* AbortGuardKeepAlive on the watched client socket: a client that vanished
 * without a FIN or RST (a dead peer, a dropped route) shows as an error
 * once the probes go unanswered. Logs (info) and goes on without when the
 * socket refuses. */
static void keepalive_start(ag_request_ctx* ctx, apr_os_sock_t fd) {
    int idle_s, interval_s, count, rv;
    ctx->keepalive.saved = 0;
    ctx->keepalive_fd = fd;
    if (!ag_config_keepalive(ctx->conf, &idle_s, &interval_s, &count)) {
        return;
    }
    rv = ag_keepalive_apply(fd, idle_s, interval_s, count, &ctx->keepalive);
    if (rv != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, ctx->owner,
                      "AG0206: cannot set TCP keepalive on the client socket; a vanished client "
                      "will not be noticed for this request");
    }
}

/* The connection may serve more requests: its socket gets its own settings
 * back. Harmless when nothing was applied. */
static void keepalive_stop(ag_request_ctx* ctx) {
    ag_keepalive_restore(ctx->keepalive_fd, &ctx->keepalive);
}

static void stop_watching(ag_request_ctx* ctx) {
    if (ctx->watch != 0) {
        ag_monitor_unwatch(ctx->monitor, ctx->watch);
        ctx->watch = 0;
        keepalive_stop(ctx);
    }
    ag_h2_unwatch_stream(ctx->stream_watch);
    ctx->stream_watch = 0;
}

int ag_request_live(const ag_request_ctx* ctx) {
    return ctx->state != NULL && !ctx->logged;
}

/* A set c->aborted means a write to the client failed, except on an HTTP/2
 * stream once its response is complete: mod_http2 also sets it on every
 * stream when the client closes the connection after reading everything. */
static int write_failed(const ag_request_ctx* ctx) {
    const conn_rec* c = ctx->owner->connection;
    /* Atomic: the monitor thread stores it (mark_connection). */
    return __atomic_load_n(&c->aborted, __ATOMIC_RELAXED) &&
           !(c->master != NULL && ctx->response_done);
}

int ag_request_aborted(ag_request_ctx* ctx) {
    if (ctx->state == NULL) {
        return ctx->final_aborted;
    }
    if (write_failed(ctx)) {
        /* No-op if the monitor was first. On an HTTP/2 stream the flag is
         * mod_http2's: the client reset the stream or its connection went. */
        ag_state_abort(ctx->state, ctx->owner->connection->master != NULL ? AG_REASON_H2_RESET
                                                                          : AG_REASON_WRITE);
    }
    return ag_state_aborted(ctx->state);
}

ag_reason_e ag_request_reason(ag_request_ctx* ctx) {
    if (!ag_request_aborted(ctx)) {
        return AG_REASON_NONE;
    }
    return ctx->state != NULL ? ag_state_reason(ctx->state) : ctx->final_reason;
}

int64_t ag_request_aborted_at_ns(ag_request_ctx* ctx) {
    if (!ag_request_aborted(ctx)) {
        return 0;
    }
    return ctx->state != NULL ? ag_state_aborted_at_ns(ctx->state) : ctx->final_aborted_at_ns;
}

int ag_request_stopping(const ag_request_ctx* ctx) {
    return ctx->state != NULL ? ag_state_stopping(ctx->state) : ctx->final_stopping;
}

ag_state* ag_request_state(ag_request_ctx* ctx) {
    return ctx->state;
}

request_rec* ag_request_owner(ag_request_ctx* ctx) {
    return ctx->owner;
}

const ag_dir_config* ag_request_config(ag_request_ctx* ctx) {
    return ctx->conf;
}

/* An HTTP/2 stream's socket is a dummy shared by all streams; mod_http2
 * sets c->aborted itself, which ag_request_aborted() honours. */
static int client_fd(const ag_request_ctx* ctx, apr_os_sock_t* fd) {
    conn_rec* c = ctx->owner->connection;
    apr_socket_t* sock;
    if (ctx->forbidden || c->master != NULL || (sock = ap_get_conn_socket(c)) == NULL) {
        return 0;
    }
    return apr_os_sock_get(fd, sock) == APR_SUCCESS;
}

int ag_request_probe_socket(ag_request_ctx* ctx) {
    apr_os_sock_t fd;
    if (ctx->state != NULL && !ag_request_aborted(ctx) && client_fd(ctx, &fd)) {
        int reason = ctx->tunnel ? ag_probe_tunnel(fd)
                                 : ag_probe_socket(fd, ag_config_ignores_half_close(ctx->conf));
        if (reason != AG_REASON_NONE) {
            ag_state_abort(ctx->state, reason);
        }
    }
    return ag_request_aborted(ctx);
}

static void log_cleanups(const ag_request_ctx* ctx, const ag_registry_summary* sum) {
    if (sum->run > 0) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, ctx->owner,
                      "AG0203: ran %d cleanup(s) in %" APR_INT64_T_FMT " us (%d failed, %d slow)",
                      sum->run, sum->total_ns / 1000, sum->failed, sum->slow);
    }
}

/* What calls after the end report (ag_request_live() is false from then). */
static void keep_outcome(ag_request_ctx* ctx, int aborted) {
    ctx->final_aborted = aborted;
    ctx->final_reason = ag_state_reason(ctx->state);
    ctx->final_aborted_at_ns = ag_state_aborted_at_ns(ctx->state);
    ctx->final_stopping = ag_state_stopping(ctx->state);
}

static void destroy_state(ag_request_ctx* ctx, int aborted) {
    int released = ag_state_destroy(ctx->state);
    ctx->state = NULL;
    if (released > 0) {
        if (aborted) {
            ag_stats_count(AG_STAT_LOCKS_RELEASED_BY_ABORT, (uint64_t)released);
        }
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, ctx->owner,
                      "AG0204: released %d lock(s) the request still held", released);
    }
}

/* A pre-cleanup of the request pool: it runs before the pool's subpools and
 * ordinary cleanups are gone, so cleanups may still use the request. The
 * cleanups run before the backstop releases the request's locks: a rollback
 * may need the lock it ran under. Afterwards the context stays (it is pool
 * memory) and answers every call with the outcome kept here. */
static apr_status_t end_request(void* data) {
    ag_request_ctx* ctx = data;
    ag_registry_summary sum;
    int aborted;

    stop_watching(ctx);
    if (ag_lifecycle_exiting_now()) {
        /* The child's exit tears the request down: under prefork inside a
         * signal handler that may have interrupted this very thread in
         * malloc or holding a lock. So nothing that locks, allocates or runs
         * the application's code: the state stays listed for the exit
         * watchdog's report, and its locks go with the process. */
        ctx->logged = 1;
        return APR_SUCCESS;
    }
    stop_tunnel_filter(ctx);
    aborted = ag_request_aborted(ctx); /* before reading the reason: it may set it */
    ag_stats_request_end(aborted, ag_state_reason(ctx->state), ag_state_start_ns(ctx->state),
                         ag_state_aborted_at_ns(ctx->state));
    ag_state_run_cleanups(ctx->state, aborted, ag_config_cleanup_warn_ns(ctx->conf), &sum);
    log_cleanups(ctx, &sum);
    ag_stats_cleanups(sum.run, sum.failed, sum.slow);
    keep_outcome(ctx, aborted);
    destroy_state(ctx, aborted);
    return APR_SUCCESS;
}

/* The first request of the redirect chain `r` is part of (a subrequest's
 * client is its main request's): the one the context belongs to. */
static request_rec* chain_head(request_rec* r) {
    for (;;) {
        if (r->main != NULL) {
            r = r->main;
        } else if (r->prev != NULL) {
            r = r->prev;
        } else {
            return r;
        }
    }
}

/* The context of `r`'s chain; NULL when there is none. *ended: the chain
 * ended without one. */
static ag_request_ctx* find_ctx(request_rec* r, int* ended) {
    request_rec* head = chain_head(r);
    void* found = ap_get_module_config(r->request_config, &abortguard_module);
    if (found == NULL) {
        found = ap_get_module_config(head->request_config, &abortguard_module);
    }
    *ended = found == &ended_unwatched;
    return *ended ? NULL : found;
}

/* A conn_rec has one socket for its whole life: once a request of this
 * connection was watched, the next one may take its registration over. */
static unsigned watch_flags(const ag_request_ctx* ctx, conn_rec* c) {
    unsigned flags = ctx->tunnel ? AG_WATCH_IGNORE_HALF_CLOSE | AG_WATCH_TUNNEL
                     : ag_config_ignores_half_close(ctx->conf) ? AG_WATCH_IGNORE_HALF_CLOSE
                                                               : 0;
    if (ap_get_module_config(c->conn_config, &abortguard_module) != NULL) {
        return flags | AG_WATCH_SAME_SOCKET;
    }
    return flags | AG_WATCH_FRESH_SOCKET;
}

static void watch_stream(ag_request_ctx* ctx, conn_rec* c) {
    if (!ctx->forbidden && c->master != NULL) {
        ag_h2_watch_stream(c, ctx->state, &ctx->stream_watch);
    }
}

static void watch_socket(ag_request_ctx* ctx) {
    conn_rec* c = ctx->owner->connection;
    apr_os_sock_t fd;
    int rv;

    ctx->monitor = ag_child_monitor();
    watch_stream(ctx, c);
    if (ctx->monitor == NULL || !client_fd(ctx, &fd)) {
        return;
    }
    ctx->watch_flags = watch_flags(ctx, c);
    rv = ag_monitor_watch(ctx->monitor, fd, ctx->watch_flags, ctx->state,
                          ag_config_marks_connection(ctx->conf) ? mark_connection : NULL, c,
                          &ctx->watch);
    if (rv != 0) {
        ctx->watch = 0;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, ctx->owner,
                      "AG0202: cannot watch the client socket; abort detection is off for "
                      "this request");
        return;
    }
    ap_set_module_config(c->conn_config, &abortguard_module, &watched_before);
    keepalive_start(ctx, fd);
}

void ag_request_enter_tunnel(ag_request_ctx* ctx) {
    if (ctx->tunnel_in == NULL && ctx->state != NULL && !ctx->forbidden) {
        conn_rec* c = ctx->owner->connection;
        ctx->tunnel_in = ap_add_input_filter_handle(tunnel_filter, ctx, NULL, c);
        ctx->tunnel_out = ap_add_output_filter_handle(tunnel_out_filter_rec, ctx, NULL, c);
    }
    ctx->tunnel = 1;
    if (ctx->state == NULL || ctx->watch == 0 || (ctx->watch_flags & AG_WATCH_TUNNEL)) {
        return;
    }
    ag_monitor_unwatch(ctx->monitor, ctx->watch);
    ctx->watch = 0;
    keepalive_stop(ctx);
    watch_socket(ctx);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, ctx->owner,
                  "AG0205: the request is now a tunnel: a client half-close is not an abort");
}

/* The server config's, in the core's own memory, keyed by the server. */
static uint64_t vhost_of(const request_rec* r) {
    return (uint64_t)(apr_uintptr_t)r->server;
}

static ag_request_ctx* create_ctx(request_rec* r, request_rec* head) {
    ag_request_ctx* ctx = apr_pcalloc(head->pool, sizeof(*ctx));
    ctx->owner = head;
    ctx->conf = ag_config_for(r);
    ctx->forbidden = ag_config_forbidden(ctx->conf);
    /* AbortGuard Off: only failed writes abort, not a stop notice either. */
    ctx->state = ag_state_create(
        r->uri, r->handler, vhost_of(r),
        !ctx->forbidden && ag_config_stop_aborts(ctx->conf) ? AG_STATE_STOP_ABORTS : 0,
        ag_lifecycle_observer());
    if (ctx->state == NULL) {
        return NULL;
    }
    apr_pool_pre_cleanup_register(head->pool, ctx, end_request);
    ap_set_module_config(head->request_config, &abortguard_module, ctx);
    if (!ctx->forbidden) {
        ag_stats_count(AG_STAT_REQUESTS_MONITORED, 1);
    }
    watch_socket(ctx);
    if (r->method_number == M_CONNECT) {
        ag_request_enter_tunnel(ctx); /* mod_proxy_connect: a tunnel from the start */
    }
    if (!ctx->forbidden && ag_config_stop_aborts(ctx->conf) &&
        ag_config_marks_connection(ctx->conf) &&
        ag_state_on_abort(ctx->state, mark_connection_on_stop, r->connection) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "AG0207: cannot mark the connection at a stop notice (out of memory)");
    }
    /* On the request the caller holds: its filter chain is the live one. */
    ap_add_output_filter_handle(eos_filter, ctx, r, r->connection);
    return ctx;
}

ag_request_ctx* ag_request_ctx_get(request_rec* r, int create, int* ended) {
    int gone;
    ag_request_ctx* ctx = find_ctx(r, &gone);
    if (ended != NULL) {
        *ended = gone || (ctx != NULL && !ag_request_live(ctx));
    }
    /* Never from a monitor thread: it must not touch the request's pools. */
    if (ctx != NULL || gone || !create || ag_on_monitor_thread()) {
        return ctx;
    }
    while (r->main != NULL) {
        r = r->main; /* a subrequest's client is its main request's */
    }
    return create_ctx(r, chain_head(r));
}

/* From here on the API reports that the request `head` ended: the first of
 * log_transaction and the teardown of its pool. */
static void mark_ended(request_rec* head) {
    ag_request_ctx* ctx = ap_get_module_config(head->request_config, &abortguard_module);
    if (ctx == NULL) {
        ap_set_module_config(head->request_config, &abortguard_module, &ended_unwatched);
    } else if (ctx != (void*)&ended_unwatched) {
        ctx->logged = 1;
    }
}

/* The request pool's last pre-cleanup, for a request that was never logged
 * (its connection broke): registered at creation, so it runs after every
 * pre-cleanup registered later (LIFO), end_request included. */
static apr_status_t mark_ended_cleanup(void* data) {
    mark_ended(data);
    return APR_SUCCESS;
}

static int request_created(request_rec* r) {
    if (r->main == NULL && r->prev == NULL) {
        apr_pool_pre_cleanup_register(r->pool, r, mark_ended_cleanup);
    }
    return OK;
}

/* AbortGuardSkipAbandoned: the client left while the request waited for a
 * worker (or, on an HTTP/2 stream, reset it). One poll(2) asks the kernel
 * now rather than waiting for the monitor's verdict on a socket just
 * watched: the answer must be there before the handler starts. */
static int abandoned(ag_request_ctx* ctx) {
    return ctx->state != NULL && !ctx->forbidden && ag_config_skip_abandoned(ctx->conf) &&
           ag_request_probe_socket(ctx);
}

static int fixups(request_rec* r) {
    ag_request_ctx* ctx;
    if (r->main != NULL ||
        (ctx = ag_request_ctx_get(r, ag_config_enabled(ag_config_for(r)), NULL)) == NULL ||
        !abandoned(ctx)) {
        return DECLINED;
    }
    /* Not handed to its handler (a proxy's never reaches its backend):
     * httpd ends the request here, logged as 503 unless AbortGuardLogStatus
     * says otherwise; a client that only half-closed gets that empty 503. */
    ctx->skipped = 1;
    ag_stats_count(AG_STAT_REQUESTS_SKIPPED, 1);
    r->status = HTTP_SERVICE_UNAVAILABLE;
    r->connection->keepalive = AP_CONN_CLOSE;
    if (ag_config_marks_connection(ctx->conf)) {
        /* As the monitor would in a moment: nothing is written to a client
         * counted as gone, whichever comes first. */
        mark_connection(r->connection, ag_request_reason(ctx));
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "AG0208: skipped: the client left (%s) before the handler started",
                  ag_reason_name(ag_request_reason(ctx)));
    return DONE;
}

/* The handler's output is complete once EOS passes: from here on a FIN is
 * the normal end of a keep-alive or lingering-close connection. Before
 * that, a 101 response turns the request into a tunnel. */
static apr_status_t eos_filter_fn(ap_filter_t* f, apr_bucket_brigade* bb) {
    ag_request_ctx* ctx = f->ctx;
    apr_bucket* b;

    if (!ctx->tunnel && f->r->status == HTTP_SWITCHING_PROTOCOLS) {
        ag_request_enter_tunnel(ctx); /* a 101 passed through the request's filters */
    }
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            ag_request_aborted(ctx); /* an HTTP/2 reset seen so far still counts */
            stop_tunnel_filter(ctx); /* the tunnel is over */
            ctx->response_done = 1;
            if (ctx->state != NULL) {
                ag_state_set_response_done(ctx->state); /* a stop notice no longer applies */
            }
            stop_watching(ctx);
            ap_remove_output_filter(f);
            break;
        }
    }
    return ap_pass_brigade(f->next, bb);
}

/* What the access log shows of an aborted request: the environment
 * variables (on every request of the redirect chain starting at `r`:
 * mod_log_config reads %{...}e from the final one) and, with
 * AbortGuardLogStatus, the status of `last`, the final one. Every abort the
 * module records means the response did not complete: the monitor stops
 * watching when the response's EOS leaves the handler, and a failed write
 * means bytes did not reach the client. */
static void publish_outcome(request_rec* r, request_rec* last, const char* reason, int skipped) {
    int status = ag_config_log_status(ag_config_for(last));
    if (status != 0) {
        last->status = status;
    }
    for (; r != NULL; r = r->next) {
        apr_table_setn(r->subprocess_env, ABORTGUARD_ENV_ABORTED, "1");
        apr_table_setn(r->subprocess_env, ABORTGUARD_ENV_REASON, reason);
        if (skipped) {
            apr_table_setn(r->subprocess_env, ABORTGUARD_ENV_SKIPPED, "1");
        }
    }
}

static int log_transaction(request_rec* r) {
    request_rec* last = r;
    ag_request_ctx* ctx;
    const char* reason;
    int ended;

    while (last->next != NULL) {
        last = last->next;
    }
    ctx = find_ctx(last, &ended);
    mark_ended(chain_head(r));
    if (ctx == NULL) {
        return DECLINED;
    }
    stop_watching(ctx);
    if (!ag_request_aborted(ctx)) {
        return DECLINED;
    }
    reason = ag_reason_name(ag_request_reason(ctx));
    publish_outcome(r, last, reason, ctx->skipped);
    ap_log_rerror(
        APLOG_MARK, APLOG_DEBUG, 0, r,
        "AG0201: client went away (%s) %" APR_INT64_T_FMT " ms into the request", reason,
        ctx->state != NULL
            ? (ag_state_aborted_at_ns(ctx->state) - ag_state_start_ns(ctx->state)) / 1000000
            : 0);
    return DECLINED;
}

void ag_request_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_create_request(request_created, NULL, NULL, APR_HOOK_MIDDLE);
    /* Last, so that redirects made by other fixups (mod_dir) are settled. */
    ap_hook_fixups(fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    /* Before mod_log_config writes the line. */
    ap_hook_log_transaction(log_transaction, NULL, NULL, APR_HOOK_REALLY_FIRST);
    eos_filter = ap_register_output_filter(AG_EOS_FILTER, eos_filter_fn, NULL, AP_FTYPE_PROTOCOL);
    tunnel_filter =
        ap_register_input_filter(AG_TUNNEL_FILTER, tunnel_in_filter, NULL, AP_FTYPE_CONNECTION);
    tunnel_out_filter_rec =
        ap_register_output_filter(AG_TUNNEL_FILTER, tunnel_out_filter, NULL, AP_FTYPE_CONNECTION);
}
