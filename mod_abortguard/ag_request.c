#include "ag_request.h"

#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "ag_config.h"
#include "mod_abortguard.h"

APLOG_USE_MODULE(abortguard);

typedef struct {
    ag_token* token;
    ag_watch_id watch; /* 0 once the socket is no longer watched */
    int64_t start_ns;
} ag_request_ctx;

/* Written in child_init before any request thread exists. */
static ag_monitor* child_monitor;

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

static void stop_watching(ag_request_ctx* ctx) {
    if (ctx->watch != 0) {
        ag_monitor_unwatch(child_monitor, ctx->watch);
        ctx->watch = 0;
    }
}

static apr_status_t release_ctx(void* data) {
    ag_request_ctx* ctx = data;
    stop_watching(ctx);
    ag_token_destroy(ctx->token);
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

static void watch_socket(request_rec* r, ag_request_ctx* ctx, const ag_dir_config* conf) {
    conn_rec* c = r->connection;
    apr_os_sock_t fd;
    unsigned flags = ag_config_ignores_half_close(conf) ? AG_WATCH_IGNORE_HALF_CLOSE : 0;
    int rv;

    /* An HTTP/2 stream's socket is a dummy shared by all streams; mod_http2
     * sets c->aborted itself, which log_transaction honours. */
    if (c->master != NULL || child_monitor == NULL) {
        return;
    }
    if (apr_os_sock_get(&fd, ap_get_conn_socket(c)) != APR_SUCCESS) {
        return;
    }
    rv =
        ag_monitor_watch(child_monitor, fd, flags, ctx->token,
                         ag_config_marks_connection(conf) ? mark_connection : NULL, c, &ctx->watch);
    if (rv != 0) {
        ctx->watch = 0;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r,
                      "AG0202: cannot watch the client socket; abort detection is off for "
                      "this request");
    }
}

int ag_request_fixups(request_rec* r) {
    const ag_dir_config* conf;
    ag_request_ctx* ctx;

    if (r->main != NULL) {
        return DECLINED; /* a subrequest's client is its main request's */
    }
    if ((ctx = find_ctx(r->prev)) != NULL) {
        /* Internal redirect: the filter, watch and token carry over. */
        ap_set_module_config(r->request_config, &abortguard_module, ctx);
        return DECLINED;
    }
    conf = ag_config_for(r);
    if (!ag_config_enabled(conf)) {
        return DECLINED;
    }
    ctx = apr_pcalloc(r->pool, sizeof(*ctx));
    if ((ctx->token = ag_token_create()) == NULL) {
        return DECLINED;
    }
    ctx->start_ns = ag_now_ns();
    apr_pool_cleanup_register(r->pool, ctx, release_ctx, apr_pool_cleanup_null);
    ap_set_module_config(r->request_config, &abortguard_module, ctx);
    watch_socket(r, ctx, conf);
    ap_add_output_filter(AG_EOS_FILTER, ctx, r, r->connection);
    return DECLINED;
}

/* The handler's output is complete once EOS passes: from here on a FIN is
 * the normal end of a keep-alive or lingering-close connection. */
apr_status_t ag_request_eos_filter(ap_filter_t* f, apr_bucket_brigade* bb) {
    apr_bucket* b;

    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            stop_watching(f->ctx);
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
    /* A failed write that httpd saw before (or instead of) the monitor. */
    if (r->connection->aborted) {
        ag_token_abort(ctx->token, AG_REASON_WRITE);
    }
    if (!ag_token_aborted(ctx->token)) {
        return DECLINED;
    }
    reason = ag_reason_name(ag_token_reason(ctx->token));
    publish(r, reason);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "AG0201: client went away (%s) %" APR_INT64_T_FMT " ms into the request", reason,
                  (ag_token_aborted_at_ns(ctx->token) - ctx->start_ns) / 1000000);
    return DECLINED;
}
