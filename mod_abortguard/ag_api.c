/* The optional functions of mod_abortguard.h: thin translations from httpd's
 * world (request_rec, APR statuses) to the request context and the core. */
#include "ag_api.h"

#include "httpd.h"
#include "http_log.h"
#include "http_request.h"
#include "util_filter.h"

#include "ag_request.h"
#include "mod_abortguard.h"

APLOG_USE_MODULE(abortguard);

/* Every function starts monitoring on demand (see mod_abortguard.h). The
 * functions are static and named as their optional-function contract, which
 * is what APR_REGISTER_OPTIONAL_FN needs. */
static ag_request_ctx* ctx_of(request_rec* r) {
    return r == NULL ? NULL : ag_request_ctx_get(r, 1);
}

static int abortguard_aborted(request_rec* r) {
    ag_request_ctx* ctx = ctx_of(r);
    return ctx != NULL ? ag_request_aborted(ctx) : (r != NULL && r->connection->aborted);
}

static const char* abortguard_reason(request_rec* r) {
    ag_request_ctx* ctx = ctx_of(r);
    if (ctx == NULL || !ag_request_aborted(ctx)) {
        return NULL;
    }
    return ag_reason_name(ag_state_reason(ag_request_state(ctx)));
}

static apr_int64_t abortguard_aborted_at(request_rec* r) {
    ag_request_ctx* ctx = ctx_of(r);
    if (ctx == NULL || !ag_request_aborted(ctx)) {
        return 0;
    }
    return ag_state_aborted_at_ns(ag_request_state(ctx)) / 1000;
}

typedef struct {
    abortguard_cleanup_fn* fn;
    request_rec* r;
    void* data;
} c_cleanup;

static void run_c_cleanup(void* arg, int aborted) {
    c_cleanup* c = arg;
    c->fn(c->r, c->data, aborted);
}

static apr_status_t abortguard_register_cleanup(request_rec* r, abortguard_cleanup_fn* fn,
                                                void* data, int when) {
    ag_request_ctx* ctx;
    c_cleanup* c;
    int rv;

    if (fn == NULL || when < ABORTGUARD_ON_ABORT || when > ABORTGUARD_ALWAYS) {
        return APR_EINVAL;
    }
    if ((ctx = ctx_of(r)) == NULL) {
        return APR_ENOMEM;
    }
    c = apr_palloc(ag_request_owner(ctx)->pool, sizeof(*c));
    c->fn = fn;
    c->r = ag_request_owner(ctx);
    c->data = data;
    /* The function pointer names the cleanup in log lines (dladdr). */
    rv = ag_state_add_cleanup(ag_request_state(ctx), run_c_cleanup, c, when,
                              (const void*)(apr_uintptr_t)fn);
    return rv == 0 ? APR_SUCCESS : rv == ECANCELED ? APR_EGENERAL : APR_FROM_OS_ERROR(rv);
}

static apr_status_t abortguard_on_abort(request_rec* r, abortguard_abort_fn* fn, void* data) {
    ag_request_ctx* ctx;
    if (fn == NULL) {
        return APR_EINVAL;
    }
    if ((ctx = ctx_of(r)) == NULL) {
        return APR_ENOMEM;
    }
    return ag_state_on_abort(ag_request_state(ctx), fn, data) == 0 ? APR_SUCCESS : APR_ENOMEM;
}

/* APR_EINTR: the stop notice ended this wait (once; see mod_abortguard.h). */
static apr_status_t abortguard_wait(request_rec* r, apr_interval_time_t timeout) {
    ag_request_ctx* ctx = ctx_of(r);
    if (ctx == NULL) {
        return APR_ENOMEM;
    }
    if (!ag_request_aborted(ctx) &&
        ag_state_wait_event(ag_request_state(ctx), timeout > 0 ? (int64_t)timeout * 1000 : 0) ==
            AG_WAIT_STOPPED) {
        return ag_request_aborted(ctx) ? APR_ECONNABORTED : APR_EINTR;
    }
    return ag_request_aborted(ctx) ? APR_ECONNABORTED : APR_TIMEUP;
}

static int abortguard_stopping(request_rec* r) {
    ag_request_ctx* ctx = ctx_of(r);
    return ctx != NULL && ag_state_stopping(ag_request_state(ctx));
}

/* Before the status line has gone out, a FLUSH through the request's
 * filters would send it: flush only what the connection already holds. */
static int flush_fails(request_rec* r) {
    conn_rec* c = r->connection;
    ap_filter_t* filters = r->sent_bodyct ? r->output_filters : c->output_filters;
    apr_bucket_brigade* bb = apr_brigade_create(r->pool, c->bucket_alloc);
    apr_status_t rv;

    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    rv = ap_pass_brigade(filters, bb);
    apr_brigade_destroy(bb);
    return rv != APR_SUCCESS || c->aborted;
}

static int abortguard_probe(request_rec* r, int flags) {
    ag_request_ctx* ctx = ctx_of(r);
    if (ctx == NULL) {
        return r != NULL && r->connection->aborted;
    }
    while (r->main != NULL) {
        r = r->main;
    }
    if ((flags & ABORTGUARD_PROBE_FLUSH) && !ag_request_aborted(ctx) && flush_fails(r)) {
        ag_state_abort(ag_request_state(ctx), AG_REASON_WRITE);
    }
    if (flags & ABORTGUARD_PROBE_SOCKET) {
        ag_request_probe_socket(ctx);
    }
    return ag_request_aborted(ctx);
}

/* Locks. The waiting ends early when the client leaves (unless AbortGuard
 * Off forbids monitoring: then only the timeout ends it). */
static apr_status_t abortguard_lock_file(request_rec* r, const char* path, int flags,
                                         apr_interval_time_t timeout, abortguard_lock_t** lock) {
    ag_request_ctx* ctx;
    int64_t timeout_ns = timeout < 0 ? -1 : (int64_t)timeout * 1000;
    int rv;

    if (path == NULL || lock == NULL ||
        (flags != ABORTGUARD_LOCK_SHARED && flags != ABORTGUARD_LOCK_EXCLUSIVE)) {
        return APR_EINVAL;
    }
    if ((ctx = ctx_of(r)) == NULL) {
        return APR_ENOMEM;
    }
    rv = ag_state_lock_file(ag_request_state(ctx), path, flags == ABORTGUARD_LOCK_EXCLUSIVE,
                            timeout_ns, ag_config_lock_warn_ns(ag_request_config(ctx)),
                            (ag_lock**)lock);
    switch (rv) {
        case 0:
            return APR_SUCCESS;
        case ETIMEDOUT:
            return APR_TIMEUP;
        case ECONNABORTED:
            return APR_ECONNABORTED;
        default:
            return APR_FROM_OS_ERROR(rv);
    }
}

static apr_status_t abortguard_unlock(abortguard_lock_t* lock) {
    if (lock == NULL) {
        return APR_EINVAL;
    }
    ag_lock_release((ag_lock*)lock);
    return APR_SUCCESS;
}

void ag_api_register(void) {
    APR_REGISTER_OPTIONAL_FN(abortguard_lock_file);
    APR_REGISTER_OPTIONAL_FN(abortguard_unlock);
    APR_REGISTER_OPTIONAL_FN(abortguard_aborted);
    APR_REGISTER_OPTIONAL_FN(abortguard_register_cleanup);
    APR_REGISTER_OPTIONAL_FN(abortguard_wait);
    APR_REGISTER_OPTIONAL_FN(abortguard_probe);
    APR_REGISTER_OPTIONAL_FN(abortguard_on_abort);
    APR_REGISTER_OPTIONAL_FN(abortguard_reason);
    APR_REGISTER_OPTIONAL_FN(abortguard_stopping);
    APR_REGISTER_OPTIONAL_FN(abortguard_aborted_at);
}
