#include "ag_request.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "ag_interop.h"
#include "agstats.h"
#include "mod_abortguard.h"

APLOG_USE_MODULE(abortguard);

struct ag_request_ctx {
    request_rec* owner; /* owns the pool everything below lives in */
    const ag_dir_config* conf;
    ag_state* state;   /* token, cleanups, locks: core-owned memory */
    ag_watch_id watch; /* 0 once the socket is no longer watched */
    int forbidden;     /* AbortGuard Off: failed writes only */
    int response_done; /* EOS has passed: the handler's output is complete */

    /* Interop (ag_interop.h) */
    ag_watch_id stream_watch;     /* HTTP/2: the stream's aborted flag; 0 when none */
    apr_os_sock_t keepalive_fd;   /* AbortGuardKeepAlive: restore on this socket */
    ag_keepalive_saved keepalive; /* saved.saved 0: nothing to restore */
};

/* Written in child_init before any request thread exists. */
static ag_monitor* child_monitor;
/* The conn_config mark of a connection one of whose requests was watched. */
static char watched_before;
/* Written in register_hooks: saves a lookup by name per request. */
static ap_filter_rec_t* eos_filter;

void ag_request_register_filter(void) {
    eos_filter =
        ap_register_output_filter(AG_EOS_FILTER, ag_request_eos_filter, NULL, AP_FTYPE_PROTOCOL);
}

void ag_request_set_monitor(ag_monitor* monitor) {
    child_monitor = monitor;
}

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

static void stop_watching(ag_request_ctx* ctx) {
    if (ctx->watch != 0) {
        ag_monitor_unwatch(child_monitor, ctx->watch);
        ctx->watch = 0;
        ag_keepalive_stop(ctx->keepalive_fd, &ctx->keepalive);
    }
    if (ctx->stream_watch != 0) {
        ag_stream_unwatch(child_monitor, ctx->stream_watch);
        ctx->stream_watch = 0;
    }
}

/* A set c->aborted means a write to the client failed, except on an HTTP/2
 * stream once its response is complete: mod_http2 also sets it on every
 * stream when the client closes the connection after reading everything. */
static int write_failed(const ag_request_ctx* ctx) {
    const conn_rec* c = ctx->owner->connection;
    return c->aborted && !(c->master != NULL && ctx->response_done);
}

int ag_request_aborted(ag_request_ctx* ctx) {
    if (write_failed(ctx)) {
        /* No-op if the monitor was first. On an HTTP/2 stream the flag is
         * mod_http2's: the client reset the stream or its connection went. */
        ag_state_abort(ctx->state, ctx->owner->connection->master != NULL ? AG_REASON_H2_RESET
                                                                          : AG_REASON_WRITE);
    }
    return ag_state_aborted(ctx->state);
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
    return !ctx->forbidden && c->master == NULL &&
           apr_os_sock_get(fd, ap_get_conn_socket(c)) == APR_SUCCESS;
}

int ag_request_probe_socket(ag_request_ctx* ctx) {
    apr_os_sock_t fd;
    if (!ag_request_aborted(ctx) && client_fd(ctx, &fd)) {
        int reason = ag_probe_socket(fd, ag_config_ignores_half_close(ctx->conf));
        if (reason != AG_REASON_NONE) {
            ag_state_abort(ctx->state, reason);
        }
    }
    return ag_state_aborted(ctx->state);
}

static void log_cleanups(const ag_request_ctx* ctx, const ag_registry_summary* sum) {
    if (sum->run > 0) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, ctx->owner,
                      "AG0203: ran %d cleanup(s) in %" APR_INT64_T_FMT " us (%d failed, %d slow)",
                      sum->run, sum->total_ns / 1000, sum->failed, sum->slow);
    }
}

/* A pre-cleanup of the request pool: it runs before the pool's subpools and
 * ordinary cleanups are gone, so cleanups may still use the request. The
 * cleanups run before the backstop releases the request's locks: a rollback
 * may need the lock it ran under. */
static apr_status_t end_request(void* data) {
    ag_request_ctx* ctx = data;
    ag_registry_summary sum;
    int aborted, released;

    stop_watching(ctx);
    aborted = ag_request_aborted(ctx); /* before reading the reason: it may set it */
    ag_stats_request_end(aborted, ag_state_reason(ctx->state), ag_state_start_ns(ctx->state),
                         ag_state_aborted_at_ns(ctx->state));
    ag_state_run_cleanups(ctx->state, aborted, ag_config_cleanup_warn_ns(ctx->conf), &sum);
    log_cleanups(ctx, &sum);
    ag_stats_cleanups(sum.run, sum.failed, sum.slow);
    released = ag_state_destroy(ctx->state);
    if (released > 0) {
        if (aborted) {
            ag_stats_count(AG_STAT_LOCKS_RELEASED_BY_ABORT, (uint64_t)released);
        }
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, ctx->owner,
                      "AG0204: released %d lock(s) the request still held", released);
    }
    return APR_SUCCESS;
}

/* The context of `r`, or of the request it was internally redirected from. */
static ag_request_ctx* find_ctx(const request_rec* r) {
    for (; r != NULL; r = r->prev) {
        ag_request_ctx* ctx = ap_get_module_config(r->request_config, &abortguard_module);
        if (ctx != NULL) {
            return ctx;
        }
    }
    return NULL;
}

/* A conn_rec has one socket for its whole life: once a request of this
 * connection was watched, the next one may take its registration over. */
static unsigned watch_flags(const ag_request_ctx* ctx, conn_rec* c) {
    unsigned flags = ag_config_ignores_half_close(ctx->conf) ? AG_WATCH_IGNORE_HALF_CLOSE : 0;
    if (ap_get_module_config(c->conn_config, &abortguard_module) != NULL) {
        return flags | AG_WATCH_SAME_SOCKET;
    }
    return flags | AG_WATCH_FRESH_SOCKET;
}

static void watch_socket(ag_request_ctx* ctx) {
    conn_rec* c = ctx->owner->connection;
    apr_os_sock_t fd;
    int rv;

    if (child_monitor != NULL && !ctx->forbidden && c->master != NULL &&
        ag_stream_watch(child_monitor, c, ctx->state, &ctx->stream_watch) != 0) {
        ctx->stream_watch = 0;
    }
    if (child_monitor == NULL || !client_fd(ctx, &fd)) {
        return;
    }
    rv = ag_monitor_watch(child_monitor, fd, watch_flags(ctx, c), ctx->state,
                          ag_config_marks_connection(ctx->conf) ? mark_connection : NULL, c,
                          &ctx->watch);
    if (rv == 0) {
        ap_set_module_config(c->conn_config, &abortguard_module, &watched_before);
    } else {
        ctx->watch = 0;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, ctx->owner,
                      "AG0202: cannot watch the client socket; abort detection is off for "
                      "this request");
        return;
    }
    ctx->keepalive_fd = fd;
    ag_keepalive_start(ctx->owner, ctx->conf, fd, &ctx->keepalive);
}

static ag_request_ctx* create_ctx(request_rec* r) {
    ag_request_ctx* ctx = apr_pcalloc(r->pool, sizeof(*ctx));
    ctx->owner = r;
    ctx->conf = ag_config_for(r);
    ctx->forbidden = ag_config_forbidden(ctx->conf);
    /* AbortGuard Off: only failed writes abort, not a stop notice either. */
    ctx->state = ag_state_create_ex(
        r->uri, r->handler,
        !ctx->forbidden && ag_config_stop_aborts(ctx->conf) ? AG_STATE_STOP_ABORTS : 0);
    if (ctx->state == NULL) {
        return NULL;
    }
    apr_pool_pre_cleanup_register(r->pool, ctx, end_request);
    ap_set_module_config(r->request_config, &abortguard_module, ctx);
    if (!ctx->forbidden) {
        ag_stats_count(AG_STAT_REQUESTS_MONITORED, 1);
    }
    watch_socket(ctx);
    if (!ctx->forbidden && ag_config_stop_aborts(ctx->conf) &&
        ag_config_marks_connection(ctx->conf)) {
        ag_state_on_abort(ctx->state, mark_connection_on_stop, r->connection);
    }
    ap_add_output_filter_handle(eos_filter, ctx, r, r->connection);
    return ctx;
}

ag_request_ctx* ag_request_ctx_get(request_rec* r, int create) {
    ag_request_ctx* ctx;
    while (r->main != NULL) {
        r = r->main; /* a subrequest's client is its main request's */
    }
    if ((ctx = find_ctx(r)) != NULL) {
        if (r->prev != NULL) { /* remember it on the redirected request */
            ap_set_module_config(r->request_config, &abortguard_module, ctx);
        }
        return ctx;
    }
    return create ? create_ctx(r) : NULL;
}

int ag_request_fixups(request_rec* r) {
    if (r->main == NULL) {
        ag_request_ctx_get(r, ag_config_enabled(ag_config_for(r)));
    }
    return DECLINED;
}

/* The handler's output is complete once EOS passes: from here on a FIN is
 * the normal end of a keep-alive or lingering-close connection. */
apr_status_t ag_request_eos_filter(ap_filter_t* f, apr_bucket_brigade* bb) {
    apr_bucket* b;

    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            ag_request_ctx* ctx = f->ctx;
            ag_request_aborted(ctx); /* an HTTP/2 reset seen so far still counts */
            ctx->response_done = 1;
            ag_state_set_response_done(ctx->state); /* a stop notice no longer applies */
            stop_watching(ctx);
            ap_remove_output_filter(f);
            break;
        }
    }
    return ap_pass_brigade(f->next, bb);
}

static void publish(request_rec* r, const char* reason) {
    /* mod_log_config reads %{...}e from the final request of a redirect
     * chain; set it on every request of the chain. */
    for (; r != NULL; r = r->next) {
        apr_table_setn(r->subprocess_env, ABORTGUARD_ENV_ABORTED, "1");
        apr_table_setn(r->subprocess_env, ABORTGUARD_ENV_REASON, reason);
    }
}

int ag_request_log_transaction(request_rec* r) {
    const request_rec* last = r;
    ag_request_ctx* ctx;
    const char* reason;

    while (last->next != NULL) {
        last = last->next;
    }
    if ((ctx = find_ctx(last)) == NULL) {
        return DECLINED;
    }
    stop_watching(ctx);
    if (!ag_request_aborted(ctx)) {
        return DECLINED;
    }
    reason = ag_reason_name(ag_state_reason(ctx->state));
    publish(r, reason);
    ag_log_status((request_rec*)last);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "AG0201: client went away (%s) %" APR_INT64_T_FMT " ms into the request", reason,
                  (ag_state_aborted_at_ns(ctx->state) - ag_state_start_ns(ctx->state)) / 1000000);
    return DECLINED;
}
