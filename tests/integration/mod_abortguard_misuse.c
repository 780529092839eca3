/* Test-only module (never installed): calls every function of
 * mod_abortguard's C API at the wrong time and with extreme arguments, and
 * logs what each returned, so that tests can hold the API to its contract
 * (README, "Calling at the wrong time") and the sanitizer build can watch
 * it do so.
 *
 *   SetHandler abortguard-misuse
 *   GET ...?case=NAME&t=TAG
 *
 * Every result goes to the error log at notice as one line
 *   AGM0001: TAG NAME key=value key=value ...
 * Cases:
 *   late      calls nothing while handled; an ordinary pool cleanup calls
 *             every function after the request ended (from a pre-cleanup
 *             too: latepre)
 *   lateused  the handler uses the API (it is monitored), then the same
 *   args      NULL and out-of-range arguments, zero/negative timeouts
 *   forever   flushes "waiting", then abortguard_wait(r, APR_INT64_MAX):
 *             logs what it returned and how long it slept
 *   monitor   an on-abort callback (monitor thread) calls the API; the
 *             handler waits for the client to leave, then logs what the
 *             callback saw
 *   bounds    registers 2000 cleanups and 2000 callbacks, and takes 100
 *             locks of files under dir=PATH; logs "ended" once the
 *             request has ended
 *   lockafter takes a lock under dir=PATH, never unlocks it, and unlocks
 *             it from an ordinary pool cleanup after the request ended
 *   subreq    the API on a subrequest of itself (case=none), which is
 *             destroyed before the main request ends */
#include <stdio.h>
#include <time.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_abortguard.h"
#include "module_helpers.h"

module AP_MODULE_DECLARE_DATA abortguard_misuse_module;
APLOG_USE_MODULE(abortguard_misuse);

static APR_OPTIONAL_FN_TYPE(abortguard_aborted) * ag_aborted;
static APR_OPTIONAL_FN_TYPE(abortguard_reason) * ag_reason;
static APR_OPTIONAL_FN_TYPE(abortguard_aborted_at) * ag_aborted_at;
static APR_OPTIONAL_FN_TYPE(abortguard_stopping) * ag_stopping;
static APR_OPTIONAL_FN_TYPE(abortguard_wait) * ag_wait;
static APR_OPTIONAL_FN_TYPE(abortguard_probe) * ag_probe;
static APR_OPTIONAL_FN_TYPE(abortguard_register_cleanup) * ag_cleanup;
static APR_OPTIONAL_FN_TYPE(abortguard_on_abort) * ag_on_abort;
static APR_OPTIONAL_FN_TYPE(abortguard_lock_file) * ag_lock;
static APR_OPTIONAL_FN_TYPE(abortguard_unlock) * ag_unlock;

static void retrieve_api(void) {
    ag_aborted = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted);
    ag_reason = APR_RETRIEVE_OPTIONAL_FN(abortguard_reason);
    ag_aborted_at = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted_at);
    ag_stopping = APR_RETRIEVE_OPTIONAL_FN(abortguard_stopping);
    ag_wait = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
    ag_probe = APR_RETRIEVE_OPTIONAL_FN(abortguard_probe);
    ag_cleanup = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
    ag_on_abort = APR_RETRIEVE_OPTIONAL_FN(abortguard_on_abort);
    ag_lock = APR_RETRIEVE_OPTIONAL_FN(abortguard_lock_file);
    ag_unlock = APR_RETRIEVE_OPTIONAL_FN(abortguard_unlock);
}

static apr_int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A status by name: the test compares names, not numbers. */
static const char* st(apr_status_t rv) {
    switch (rv) {
        case APR_SUCCESS:
            return "SUCCESS";
        case APR_EINVAL:
            return "EINVAL";
        case APR_EGENERAL:
            return "EGENERAL";
        case APR_ENOMEM:
            return "ENOMEM";
        case APR_TIMEUP:
            return "TIMEUP";
        case APR_ECONNABORTED:
            return "ECONNABORTED";
        case APR_EINTR:
            return "EINTR";
        case APR_ENOSPC:
            return "ENOSPC";
        default:
            return "OTHER";
    }
}

/* Logs on the server, never through r: some lines are written after r's
 * request has ended, or from a monitor thread. */
static void report(server_rec* s, const char* tag, const char* name, const char* text) {
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "AGM0001: %s %s %s", tag, name, text);
}

static void noop_cleanup(request_rec* r, void* data, int aborted) {
    (void)r;
    (void)data;
    (void)aborted;
}

static void noop_abort(void* data, int reason) {
    (void)data;
    (void)reason;
}

typedef struct {
    request_rec* r;
    server_rec* s;
    const char* tag;
    const char* name;
    const char* lock_path; /* made before the end: no allocation after it */
} late_call;

/* Every function, after the request ended; none may block, crash or start
 * monitoring again. */
static void call_everything(const late_call* lc) {
    request_rec* r = lc->r;
    abortguard_lock_t* lock = (abortguard_lock_t*)1; /* must be set to NULL */
    const char* reason = ag_reason(r);
    apr_int64_t start = now_us();
    apr_status_t waited = ag_wait(r, apr_time_from_sec(5));
    apr_int64_t slept = now_us() - start;
    apr_status_t locked =
        ag_lock(r, lc->lock_path, ABORTGUARD_LOCK_EXCLUSIVE, apr_time_from_sec(5), &lock);
    char text[512];
    snprintf(text, sizeof text,
             "aborted=%d reason=%s at=%d stopping=%d wait=%s slept_ms=%d probe=%d cleanup=%s "
             "on_abort=%s lock=%s lock_null=%d",
             ag_aborted(r), reason ? reason : "-", ag_aborted_at(r) != 0, ag_stopping(r),
             st(waited), (int)(slept / 1000),
             ag_probe(r, ABORTGUARD_PROBE_SOCKET | ABORTGUARD_PROBE_FLUSH),
             st(ag_cleanup(r, noop_cleanup, NULL, ABORTGUARD_ALWAYS)),
             st(ag_on_abort(r, noop_abort, NULL)), st(locked), lock == NULL);
    report(lc->s, lc->tag, lc->name, text);
}

static apr_status_t late_cleanup(void* data) {
    call_everything(data);
    return APR_SUCCESS;
}

static int case_late(request_rec* r, const char* tag, int pre, int used) {
    late_call* lc = apr_pcalloc(r->pool, sizeof(*lc));
    lc->r = r;
    lc->s = r->server;
    lc->tag = tag;
    lc->name = pre ? "latepre" : used ? "lateused" : "late";
    lc->lock_path = apr_pstrcat(r->pool, module_arg(r, "dir", "/tmp"), "/late.lock", NULL);
    if (used) {
        ag_aborted(r); /* monitored from here */
    }
    if (pre) {
        apr_pool_pre_cleanup_register(r->pool, lc, late_cleanup);
    } else {
        apr_pool_cleanup_register(r->pool, lc, late_cleanup, apr_pool_cleanup_null);
    }
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

static int case_args(request_rec* r, const char* tag) {
    abortguard_lock_t* lock = NULL;
    char text[512];
    apr_int64_t start = now_us();
    apr_status_t zero = ag_wait(r, 0), negative = ag_wait(r, -5), min = ag_wait(r, APR_INT64_MIN);
    int quick = now_us() - start < 1000000;
    snprintf(text, sizeof text,
             "null_aborted=%d null_reason=%d null_at=%d null_stopping=%d null_probe=%d "
             "null_wait=%s null_cleanup=%s null_fn=%s bad_when=%s null_on_abort=%s "
             "null_abort_fn=%s null_lock_r=%s null_path=%s null_out=%s bad_flags=%s "
             "null_unlock=%s wait0=%s wait_neg=%s wait_min=%s quick=%d unknown_probe=%d",
             ag_aborted(NULL), ag_reason(NULL) != NULL, ag_aborted_at(NULL) != 0, ag_stopping(NULL),
             ag_probe(NULL, ABORTGUARD_PROBE_FLUSH), st(ag_wait(NULL, 1000)),
             st(ag_cleanup(NULL, noop_cleanup, NULL, ABORTGUARD_ALWAYS)),
             st(ag_cleanup(r, NULL, NULL, ABORTGUARD_ALWAYS)),
             st(ag_cleanup(r, noop_cleanup, NULL, 99)), st(ag_on_abort(NULL, noop_abort, NULL)),
             st(ag_on_abort(r, NULL, NULL)),
             st(ag_lock(NULL, "/tmp/x", ABORTGUARD_LOCK_SHARED, 0, &lock)),
             st(ag_lock(r, NULL, ABORTGUARD_LOCK_SHARED, 0, &lock)),
             st(ag_lock(r, "/tmp/x", ABORTGUARD_LOCK_SHARED, 0, NULL)),
             st(ag_lock(r, "/tmp/x", 7, 0, &lock)), st(ag_unlock(NULL)), st(zero), st(negative),
             st(min), quick, ag_probe(r, 0x7ff0));
    report(r->server, tag, "args", text);
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

static int case_forever(request_rec* r, const char* tag) {
    apr_int64_t start;
    apr_status_t rv;
    char text[128];
    ap_set_content_type(r, "text/plain");
    ap_rputs("waiting\n", r);
    ap_rflush(r);
    start = now_us();
    rv = ag_wait(r, APR_INT64_MAX);
    snprintf(text, sizeof text, "wait=%s slept_ms=%d", st(rv), (int)((now_us() - start) / 1000));
    report(r->server, tag, "forever", text);
    return OK;
}

/* What the on-abort callback saw, on the monitor thread. */
typedef struct {
    request_rec* r;
    const char* dir;
    volatile int ran;
    int aborted, reason_ok, at_ok, nested_ran;
    apr_status_t wait, cleanup, on_abort, lock;
    int slept_ms;
} monitor_seen;

static void nested_abort(void* data, int reason) {
    (void)reason;
    ((monitor_seen*)data)->nested_ran = 1;
}

static void on_abort_calls(void* data, int reason) {
    monitor_seen* m = data;
    abortguard_lock_t* lock = NULL;
    const char* why = ag_reason(m->r);
    apr_int64_t start = now_us();
    (void)reason;
    m->wait = ag_wait(m->r, apr_time_from_sec(5));
    m->slept_ms = (int)((now_us() - start) / 1000);
    m->aborted = ag_aborted(m->r);
    m->reason_ok = why != NULL;
    m->at_ok = ag_aborted_at(m->r) != 0;
    m->cleanup = ag_cleanup(m->r, noop_cleanup, NULL, ABORTGUARD_ON_ABORT);
    m->on_abort = ag_on_abort(m->r, nested_abort, m);
    /* The path is built before: no pool allocation on this thread. */
    m->lock = ag_lock(m->r, m->dir, ABORTGUARD_LOCK_EXCLUSIVE, apr_time_from_sec(5), &lock);
    __atomic_store_n(&m->ran, 1, __ATOMIC_RELEASE);
}

static int case_monitor(request_rec* r, const char* tag) {
    monitor_seen* m = apr_pcalloc(r->pool, sizeof(*m));
    char text[512];
    m->r = r;
    m->dir = apr_pstrcat(r->pool, module_arg(r, "dir", "/tmp"), "/monitor.lock", NULL);
    ag_on_abort(r, on_abort_calls, m);
    ap_set_content_type(r, "text/plain");
    ap_rputs("waiting\n", r);
    ap_rflush(r);
    ag_wait(r, apr_time_from_sec(10));
    while (!__atomic_load_n(&m->ran, __ATOMIC_ACQUIRE)) {
        apr_sleep(1000);
    }
    snprintf(text, sizeof text,
             "wait=%s slept_ms=%d aborted=%d reason=%d at=%d cleanup=%s on_abort=%s nested=%d "
             "lock=%s",
             st(m->wait), m->slept_ms, m->aborted, m->reason_ok, m->at_ok, st(m->cleanup),
             st(m->on_abort), m->nested_ran, st(m->lock));
    report(r->server, tag, "monitor", text);
    return OK;
}

typedef struct {
    server_rec* s;
    const char* tag;
} ended_note;

/* An ordinary cleanup of the request pool runs after mod_abortguard's
 * pre-cleanup has ended the request (and released its locks). */
static apr_status_t report_ended(void* data) {
    ended_note* n = data;
    report(n->s, n->tag, "ended", "request=ended");
    return APR_SUCCESS;
}

static int case_bounds(request_rec* r, const char* tag) {
    int cleanups = 0, callbacks = 0, locks = 0, i;
    apr_status_t last_cleanup = APR_SUCCESS, last_callback = APR_SUCCESS, last_lock = APR_SUCCESS;
    const char* dir = module_arg(r, "dir", "/tmp");
    char text[256];
    for (i = 0; i < 2000; ++i) {
        apr_status_t rv = ag_cleanup(r, noop_cleanup, NULL, ABORTGUARD_ALWAYS);
        cleanups += rv == APR_SUCCESS;
        last_cleanup = rv;
        rv = ag_on_abort(r, noop_abort, NULL);
        callbacks += rv == APR_SUCCESS;
        last_callback = rv;
    }
    for (i = 0; i < 100; ++i) {
        abortguard_lock_t* lock;
        apr_status_t rv = ag_lock(r, apr_psprintf(r->pool, "%s/bound-%d.lock", dir, i),
                                  ABORTGUARD_LOCK_EXCLUSIVE, 0, &lock);
        locks += rv == APR_SUCCESS;
        last_lock = rv;
    }
    snprintf(text, sizeof text, "cleanups=%d last=%s callbacks=%d last=%s locks=%d last=%s",
             cleanups, st(last_cleanup), callbacks, st(last_callback), locks, st(last_lock));
    report(r->server, tag, "bounds", text);
    {
        ended_note* n = apr_palloc(r->pool, sizeof(*n));
        n->s = r->server;
        n->tag = apr_pstrdup(r->pool, tag);
        apr_pool_cleanup_register(r->pool, n, report_ended, apr_pool_cleanup_null);
    }
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

typedef struct {
    abortguard_lock_t* lock;
    server_rec* s;
    const char* tag;
} lock_after;

static apr_status_t unlock_after_end(void* data) {
    lock_after* la = data;
    char text[64];
    snprintf(text, sizeof text, "unlock=%s", st(ag_unlock(la->lock)));
    report(la->s, la->tag, "lockafter", text);
    return APR_SUCCESS;
}

static int case_lockafter(request_rec* r, const char* tag) {
    lock_after* la = apr_pcalloc(r->pool, sizeof(*la));
    apr_status_t rv;
    la->s = r->server;
    la->tag = tag;
    rv = ag_lock(r, apr_pstrcat(r->pool, module_arg(r, "dir", "/tmp"), "/after.lock", NULL),
                 ABORTGUARD_LOCK_EXCLUSIVE, apr_time_from_sec(5), &la->lock);
    if (rv != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(r->pool, la, unlock_after_end, apr_pool_cleanup_null);
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

typedef struct {
    server_rec* s;
    const char* tag;
} subreq_note;

static void subreq_cleanup(request_rec* r, void* data, int aborted) {
    subreq_note* n = data;
    report(n->s, n->tag, "subreq",
           apr_psprintf(r->pool, "cleanup_ran=1 main=%d aborted=%d", r->main == NULL, aborted));
}

static int case_subreq(request_rec* r, const char* tag) {
    request_rec* sub =
        ap_sub_req_lookup_uri(apr_pstrcat(r->pool, r->uri, "?case=none", NULL), r, NULL);
    subreq_note* n = apr_pcalloc(r->pool, sizeof(*n));
    apr_status_t rv;
    n->s = r->server;
    n->tag = tag;
    rv = ag_cleanup(sub, subreq_cleanup, n, ABORTGUARD_ON_SUCCESS);
    report(r->server, tag, "subreq-registered",
           apr_psprintf(r->pool, "cleanup=%s aborted=%d", st(rv), ag_aborted(sub)));
    ap_destroy_sub_req(sub);
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

static int misuse_handler(request_rec* r) {
    const char *name, *tag;
    if (r->handler == NULL || strcmp(r->handler, "abortguard-misuse") != 0) {
        return DECLINED;
    }
    if (ag_aborted == NULL) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    name = module_arg(r, "case", "none");
    tag = module_arg(r, "t", "-");
    if (!strcmp(name, "late") || !strcmp(name, "latepre") || !strcmp(name, "lateused")) {
        return case_late(r, tag, !strcmp(name, "latepre"), !strcmp(name, "lateused"));
    }
    if (!strcmp(name, "args")) {
        return case_args(r, tag);
    }
    if (!strcmp(name, "forever")) {
        return case_forever(r, tag);
    }
    if (!strcmp(name, "monitor")) {
        return case_monitor(r, tag);
    }
    if (!strcmp(name, "bounds")) {
        return case_bounds(r, tag);
    }
    if (!strcmp(name, "lockafter")) {
        return case_lockafter(r, tag);
    }
    if (!strcmp(name, "subreq")) {
        return case_subreq(r, tag);
    }
    ap_set_content_type(r, "text/plain");
    ap_rputs("none\n", r);
    return OK;
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_optional_fn_retrieve(retrieve_api, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(misuse_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_misuse_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks, AP_MODULE_FLAG_NONE};
