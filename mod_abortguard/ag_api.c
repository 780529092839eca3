/* The optional functions of mod_abortguard.h: thin translations from httpd's
 * world (request_rec, APR statuses) to the request context and the core. */
#include "ag_api.h"

#include "httpd.h"
#include "http_log.h"
#include "http_request.h"
#include "util_filter.h"

#include "ag_request.h"
#include "ag_private.h"
#include "mod_abortguard.h" /* the public names implemented here */

/* The public values are the core's, passed through unchanged. */
_Static_assert(ABORTGUARD_ON_ABORT == AG_WHEN_ON_ABORT, "ABORTGUARD_ON_ABORT");
_Static_assert(ABORTGUARD_ON_SUCCESS == AG_WHEN_ON_SUCCESS, "ABORTGUARD_ON_SUCCESS");
_Static_assert(ABORTGUARD_ALWAYS == AG_WHEN_ALWAYS, "ABORTGUARD_ALWAYS");
_Static_assert(ABORTGUARD_ABORTED_TERMINATING == AG_ABORTED_TERMINATING,
               "ABORTGUARD_ABORTED_TERMINATING");

/* Every function starts monitoring on demand (see mod_abortguard.h). The
 * functions are static and named as their optional-function contract, which
 * is what APR_REGISTER_OPTIONAL_FN needs.
 *
 * Misuse has a defined outcome (README, "Calling at the wrong time"): NULL
 * arguments are APR_EINVAL (or "not aborted"); after the request ended the
 * queries report its outcome and everything else refuses with APR_EGENERAL
 * without blocking; on a monitor thread (inside an abort callback) nothing
 * blocks or touches the request's pools. */
static ag_request_ctx* ctx_of(request_rec* r, int* ended) {
    return ag_request_ctx_get(r, 1, ended);
}

/* Whether a call must not block or allocate in the request: it ended, or
 * this is a monitor thread. */
static int not_now(int ended) {
    return ended || ag_on_monitor_thread();
}

static int abortguard_aborted(request_rec* r) {
    ag_request_ctx* ctx;
    if (r == NULL) {
        return 0;
    }
    ctx = ctx_of(r, NULL);
    return ctx != NULL ? ag_request_aborted(ctx) : r->connection->aborted != 0;
}

static const char* abortguard_reason(request_rec* r) {
    ag_request_ctx* ctx = r != NULL ? ctx_of(r, NULL) : NULL;
    ag_reason_e reason = ctx != NULL ? ag_request_reason(ctx) : AG_REASON_NONE;
    return reason != AG_REASON_NONE ? ag_reason_name(reason) : NULL;
}

static apr_int64_t abortguard_aborted_at(request_rec* r) {
    ag_request_ctx* ctx = r != NULL ? ctx_of(r, NULL) : NULL;
    return ctx != NULL ? ag_request_aborted_at_ns(ctx) / 1000 : 0;
}

static int abortguard_stopping(request_rec* r) {
    ag_request_ctx* ctx = r != NULL ? ctx_of(r, NULL) : NULL;
    return ctx != NULL && ag_request_stopping(ctx);
}

/* A C cleanup: the user's fn(r, data, aborted), with `r` the request that
 * owns the context (the main request of a subrequest). */
static void run_c_cleanup(ag_any_fn* user, void* r, void* data, int aborted) {
    ((abortguard_cleanup_fn*)user)(r, data, aborted);
}

static apr_status_t from_errno(int rv) {
    switch (rv) {
        case 0:
            return APR_SUCCESS;
        case ECANCELED:
            return APR_EGENERAL; /* the cleanups have run: the request ended */
        case ETIMEDOUT:
            return APR_TIMEUP;
        case ECONNABORTED:
            return APR_ECONNABORTED;
        default:
            return APR_FROM_OS_ERROR(rv);
    }
}

/* The live context for a registration, or NULL and *rv why not. */
static ag_request_ctx* live_ctx(request_rec* r, apr_status_t* rv) {
    int ended;
    ag_request_ctx* ctx = ctx_of(r, &ended);
    if (ctx != NULL && ag_request_live(ctx)) {
        return ctx;
    }
    *rv = ended || ag_on_monitor_thread() ? APR_EGENERAL : APR_ENOMEM;
    return NULL;
}

static apr_status_t abortguard_register_cleanup(request_rec* r, abortguard_cleanup_fn* fn,
                                                void* data, int when) {
    ag_request_ctx* ctx;
    apr_status_t rv;

    if (r == NULL || fn == NULL || when < ABORTGUARD_ON_ABORT || when > ABORTGUARD_ALWAYS) {
        return APR_EINVAL;
    }
    if ((ctx = live_ctx(r, &rv)) == NULL) {
        return rv;
    }
    /* The function pointer names the cleanup in log lines (dladdr). */
    return from_errno(ag_state_add_cleanup(ag_request_state(ctx), run_c_cleanup, (ag_any_fn*)fn,
                                           ag_request_owner(ctx), data, when,
                                           (const void*)(apr_uintptr_t)fn));
}

static apr_status_t abortguard_on_abort(request_rec* r, abortguard_abort_fn* fn, void* data) {
    ag_request_ctx* ctx;
    apr_status_t rv;
    if (r == NULL || fn == NULL) {
        return APR_EINVAL;
    }
    if ((ctx = live_ctx(r, &rv)) == NULL) {
        return rv;
    }
    return from_errno(ag_state_on_abort(ag_request_state(ctx), fn, data));
}

/* Without sleeping: after the request ended, or on a monitor thread. */
static apr_status_t wait_now(ag_request_ctx* ctx, request_rec* r) {
    int aborted = ctx != NULL ? ag_request_aborted(ctx) : r->connection->aborted != 0;
    return aborted ? APR_ECONNABORTED : APR_EGENERAL;
}

/* APR_EINTR: the stop notice ended this wait (once; see mod_abortguard.h).
 * The timeout saturates: APR_INT64_MAX waits until the client leaves. */
static apr_status_t abortguard_wait(request_rec* r, apr_interval_time_t timeout) {
    ag_request_ctx* ctx;
    int ended;
    if (r == NULL) {
        return APR_EINVAL;
    }
    ctx = ctx_of(r, &ended);
    if (not_now(ended) || (ctx != NULL && !ag_request_live(ctx))) {
        return wait_now(ctx, r);
    }
    if (ctx == NULL) {
        return APR_ENOMEM;
    }
    if (!ag_request_aborted(ctx) &&
        ag_state_wait_event(ag_request_state(ctx), timeout > 0 ? ag_us_to_ns(timeout) : 0) ==
            AG_WAIT_STOPPED) {
        return ag_request_aborted(ctx) ? APR_ECONNABORTED : APR_EINTR;
    }
    return ag_request_aborted(ctx) ? APR_ECONNABORTED : APR_TIMEUP;
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
    return rv != APR_SUCCESS || __atomic_load_n(&c->aborted, __ATOMIC_RELAXED);
}

/* The flush probe writes through the filters: only on the request's own
 * thread while it is live. */
static int abortguard_probe(request_rec* r, int flags) {
    ag_request_ctx* ctx;
    int ended;
    if (r == NULL) {
        return 0;
    }
    if ((ctx = ctx_of(r, &ended)) == NULL) {
        return r->connection->aborted != 0;
    }
    while (r->main != NULL) {
        r = r->main;
    }
    if ((flags & ABORTGUARD_PROBE_FLUSH) && !not_now(ended) && ag_request_live(ctx) &&
        !ag_request_aborted(ctx) && flush_fails(r)) {
        ag_state_abort(ag_request_state(ctx), AG_REASON_WRITE);
    }
    if (flags & ABORTGUARD_PROBE_SOCKET) {
        ag_request_probe_socket(ctx);
    }
    return ag_request_aborted(ctx);
}

/* A lock handle lives in the request pool, so that it stays valid through
 * every cleanup of that pool -- after the core's record is gone, unlocking
 * is then a no-op (the request's end released the lock). */
struct abortguard_lock_t {
    ag_request_ctx* ctx;
    ag_lock_ref ref;
};

/* Locks. The waiting ends early when the client leaves (unless AbortGuard
 * Off forbids monitoring: then only the timeout ends it). */
static apr_status_t abortguard_lock_file(request_rec* r, const char* path, int flags,
                                         apr_interval_time_t timeout, abortguard_lock_t** lock) {
    ag_request_ctx* ctx;
    ag_lock_ref ref;
    apr_status_t rv;

    if (lock != NULL) {
        *lock = NULL;
    }
    if (r == NULL || path == NULL || lock == NULL ||
        (flags != ABORTGUARD_LOCK_SHARED && flags != ABORTGUARD_LOCK_EXCLUSIVE)) {
        return APR_EINVAL;
    }
    /* A monitor thread must not block; a lock after the end would leak. */
    if ((ctx = live_ctx(r, &rv)) == NULL || ag_on_monitor_thread()) {
        return ctx != NULL ? APR_EGENERAL : rv;
    }
    rv = from_errno(ag_state_lock_file(ag_request_state(ctx), path,
                                       flags == ABORTGUARD_LOCK_EXCLUSIVE,
                                       timeout < 0 ? -1 : ag_us_to_ns(timeout),
                                       ag_config_lock_warn_ns(ag_request_config(ctx)), &ref));
    if (rv == APR_SUCCESS) {
        *lock = apr_palloc(ag_request_owner(ctx)->pool, sizeof(**lock));
        (*lock)->ctx = ctx;
        (*lock)->ref = ref;
    }
    return rv;
}

static apr_status_t abortguard_unlock(abortguard_lock_t* lock) {
    if (lock == NULL) {
        return APR_EINVAL;
    }
    /* Until the request's teardown released every lock. */
    if (ag_request_state(lock->ctx) != NULL) {
        ag_lock_release(lock->ref);
    }
    return APR_SUCCESS;
}

void ag_api_register_hooks(apr_pool_t* p) {
    (void)p;
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
