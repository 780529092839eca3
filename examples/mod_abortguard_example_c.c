/* An example handler in C that uses mod_abortguard's API the way the README
 * teaches it:
 *  - a long computation that stops as soon as the client leaves;
 *  - a "transaction" that is rolled back when the client aborted and
 *    committed when the response completed, by cleanups that run exactly
 *    once at the end of the request.
 *
 *   <Location /example-c>
 *       SetHandler abortguard-example-c
 *   </Location>
 *
 *   GET /example-c?id=42&ms=3000   computes for 3 s (in 10 ms steps)
 *
 * Each step waits on abortguard_wait(), which wakes at once when the client
 * leaves. Two other ways to ask, for code that cannot sleep on the token:
 *
 *   ...&mode=probe   each step sleeps 10 ms, then asks
 *                    abortguard_probe(r, ABORTGUARD_PROBE_SOCKET): the
 *                    kernel's view of the socket, nothing sent or read
 *   ...&mode=flush   writes "x\n" first (the response has started), then
 *                    each step sleeps 10 ms and asks
 *                    abortguard_probe(r, ABORTGUARD_PROBE_FLUSH): a flush of
 *                    the output so far, a failed write means the client left
 *                    (the probe itself never adds bytes to the body)
 *
 * No AbortGuard directive is needed: using the API starts monitoring. */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "mod_abortguard.h"

module AP_MODULE_DECLARE_DATA abortguard_example_c_module;
APLOG_USE_MODULE(abortguard_example_c);

static APR_OPTIONAL_FN_TYPE(abortguard_aborted) * ag_aborted;
static APR_OPTIONAL_FN_TYPE(abortguard_wait) * ag_wait;
static APR_OPTIONAL_FN_TYPE(abortguard_register_cleanup) * ag_register_cleanup;
static APR_OPTIONAL_FN_TYPE(abortguard_probe) * ag_probe;

/* Optional functions may move when httpd reloads modules: fetch them anew
 * at every (re)start. */
static void retrieve_api(void) {
    ag_aborted = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted);
    ag_wait = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
    ag_register_cleanup = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
    ag_probe = APR_RETRIEVE_OPTIONAL_FN(abortguard_probe);
}

static const char* query_arg(request_rec* r, const char* name, const char* dflt) {
    const char* v = r->args ? ap_strstr_c(r->args, name) : NULL;
    size_t n = strlen(name);
    if (v == NULL || v[n] != '=') {
        return dflt;
    }
    return apr_pstrndup(r->pool, v + n + 1, strcspn(v + n + 1, "&"));
}

/* The "transaction" ends in exactly one of these, chosen by the outcome. */
static void rollback(request_rec* r, void* data, int aborted) {
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AGX0001: transaction %s rolled back",
                  (const char*)data);
}

static void commit(request_rec* r, void* data, int aborted) {
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AGX0002: transaction %s committed",
                  (const char*)data);
}

/* One step of the computation: 10 ms of "work", then the question whether
 * anybody is still listening (see mode= above). Returns 0 when the client is
 * gone. */
static int compute_step(request_rec* r, const char* mode) {
    if (strcmp(mode, "probe") == 0) {
        apr_sleep(apr_time_from_msec(10));
        return !ag_probe(r, ABORTGUARD_PROBE_SOCKET);
    }
    if (strcmp(mode, "flush") == 0) {
        apr_sleep(apr_time_from_msec(10));
        return !ag_probe(r, ABORTGUARD_PROBE_FLUSH);
    }
    /* The usual way: a sleep that wakes early when the client leaves. */
    return ag_wait(r, apr_time_from_msec(10)) != APR_ECONNABORTED;
}

static int example_handler(request_rec* r) {
    const char* id;
    const char* mode;
    apr_time_t until;

    if (strcmp(r->handler, "abortguard-example-c") != 0) {
        return DECLINED;
    }
    if (ag_aborted == NULL || ag_wait == NULL || ag_register_cleanup == NULL || ag_probe == NULL) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "AGX0003: mod_abortguard is not loaded");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    id = query_arg(r, "id", "0");
    mode = query_arg(r, "mode", "wait");
    until = apr_time_now() + apr_time_from_msec(atoi(query_arg(r, "ms", "1000")));

    ag_register_cleanup(r, rollback, (void*)id, ABORTGUARD_ON_ABORT);
    ag_register_cleanup(r, commit, (void*)id, ABORTGUARD_ON_SUCCESS);

    if (strcmp(mode, "flush") == 0) {
        ap_set_content_type(r, "text/plain");
        ap_rputs("x\n", r); /* the response starts before the work */
        ap_rflush(r);
    }
    while (apr_time_now() < until) {
        if (!compute_step(r, mode)) {
            return OK; /* nobody is listening: stop, the cleanups roll back */
        }
    }
    if (ag_aborted(r)) {
        return OK;
    }
    ap_set_content_type(r, "text/plain");
    ap_rprintf(r, "transaction %s done\n", id);
    return OK;
}

static void register_hooks(apr_pool_t* p) {
    ap_hook_optional_fn_retrieve(retrieve_api, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(example_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_example_c_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks,
};
