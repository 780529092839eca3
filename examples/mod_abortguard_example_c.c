/* An example handler in C that uses mod_abortguard's API the way the README
 * teaches it:
 *  - a long computation that stops as soon as the client leaves;
 *  - a "transaction" that is rolled back when the client aborted and
 *    committed when the response completed, by cleanups that run exactly
 *    once at the end of the request;
 *  - a graceful restart or stop that does not wait for the computation:
 *    at the child's stop notice the handler rolls back and answers 503 with
 *    Retry-After, so that the client asks again (a new child will answer),
 *    or, in mode=flush, ends the response it has started truncated.
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
#include "http_main.h"
#include "http_protocol.h"
#include "util_script.h"
#include "apr_strings.h"

#include "mod_abortguard.h"

module AP_MODULE_DECLARE_DATA abortguard_example_c_module;
APLOG_USE_MODULE(abortguard_example_c);

static APR_OPTIONAL_FN_TYPE(abortguard_aborted) * ag_aborted;
static APR_OPTIONAL_FN_TYPE(abortguard_wait) * ag_wait;
static APR_OPTIONAL_FN_TYPE(abortguard_register_cleanup) * ag_register_cleanup;
static APR_OPTIONAL_FN_TYPE(abortguard_probe) * ag_probe;
static APR_OPTIONAL_FN_TYPE(abortguard_stopping) * ag_stopping;

/* Optional functions may move when httpd reloads modules: fetch them anew
 * at every (re)start. */
static void retrieve_api(void) {
    ag_aborted = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted);
    ag_wait = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
    ag_register_cleanup = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
    ag_probe = APR_RETRIEVE_OPTIONAL_FN(abortguard_probe);
    ag_stopping = APR_RETRIEVE_OPTIONAL_FN(abortguard_stopping);
}

/* httpd parses (and %-decodes) the query: no hand-written parser. */
static const char* query_arg(request_rec* r, const char* name, const char* dflt) {
    apr_table_t* args;
    const char* value;
    ap_args_to_table(r, &args);
    value = apr_table_get(args, name);
    return value != NULL ? value : dflt;
}

/* The "transaction" ends in exactly one of these. The cleanups select by
 * the client alone (ABORTGUARD_ON_ABORT, ABORTGUARD_ON_SUCCESS), so the
 * commit is registered only once the work is done: a request cut short by
 * the stop notice completes without an abort, and must not commit. */
static void rollback(request_rec* r, void* data, int aborted) {
    /* Under AbortGuardGraceAction terminate this runs on mod_abortguard's
     * monitor thread while the hung handler still uses r: not a word to r. */
    if (aborted == ABORTGUARD_ABORTED_TERMINATING) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf,
                     "AGX0001: transaction %s rolled back", (const char*)data);
        return;
    }
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AGX0001: transaction %s rolled back",
                  (const char*)data);
}

static void commit(request_rec* r, void* data, int aborted) {
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AGX0002: transaction %s committed",
                  (const char*)data);
}

typedef enum { STEP_DONE, STEP_CLIENT_GONE, STEP_SERVER_STOPPING } step_result;

/* One step of the computation: 10 ms of "work", then the questions whether
 * anybody is still listening (see mode= above) and whether this child is
 * stopping. */
static step_result compute_step(request_rec* r, const char* mode) {
    int gone;
    if (strcmp(mode, "probe") == 0 || strcmp(mode, "flush") == 0) {
        apr_sleep(apr_time_from_msec(10));
        gone = ag_probe(
            r, strcmp(mode, "probe") == 0 ? ABORTGUARD_PROBE_SOCKET : ABORTGUARD_PROBE_FLUSH);
    } else {
        /* The usual way: a sleep that wakes early when the client leaves,
         * or when the stop notice comes (APR_EINTR, once). */
        gone = ag_wait(r, apr_time_from_msec(10)) == APR_ECONNABORTED;
    }
    if (gone) {
        return STEP_CLIENT_GONE;
    }
    return ag_stopping(r) ? STEP_SERVER_STOPPING : STEP_DONE;
}

/* A response already started cannot change its status: it ends truncated,
 * the way mod_proxy ends one whose backend broke (an error bucket: no last
 * chunk, the connection closes), so that no client takes it for complete. */
static void end_truncated(request_rec* r) {
    conn_rec* c = r->connection;
    apr_bucket_brigade* bb = apr_brigade_create(r->pool, c->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(
        bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
}

/* Cut short by the stop notice: tell the client to ask again. The work is
 * rolled back exactly once: by the ON_ABORT cleanup if the client leaves
 * before it has this answer, else by this ON_SUCCESS one. */
static int answer_stopping(request_rec* r, const char* id, int started) {
    ag_register_cleanup(r, rollback, (void*)id, ABORTGUARD_ON_SUCCESS);
    if (started) {
        end_truncated(r);
        return OK;
    }
    apr_table_setn(r->err_headers_out, "Retry-After", "1");
    return HTTP_SERVICE_UNAVAILABLE;
}

static int example_handler(request_rec* r) {
    const char* id;
    const char* mode;
    int started;
    apr_time_t until;

    if (strcmp(r->handler, "abortguard-example-c") != 0) {
        return DECLINED;
    }
    if (ag_aborted == NULL || ag_wait == NULL || ag_register_cleanup == NULL || ag_probe == NULL ||
        ag_stopping == NULL) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "AGX0003: mod_abortguard is not loaded");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    id = query_arg(r, "id", "0");
    mode = query_arg(r, "mode", "wait");
    until = apr_time_now() + apr_time_from_msec(atoi(query_arg(r, "ms", "1000")));

    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "AGX0004: transaction %s begun", id);
    ag_register_cleanup(r, rollback, (void*)id, ABORTGUARD_ON_ABORT);

    started = strcmp(mode, "flush") == 0;
    if (started) {
        ap_set_content_type(r, "text/plain");
        ap_rputs("x\n", r); /* the response starts before the work */
        ap_rflush(r);
    }
    while (apr_time_now() < until) {
        switch (compute_step(r, mode)) {
            case STEP_CLIENT_GONE:
                return OK; /* nobody is listening: stop, the cleanup rolls back */
            case STEP_SERVER_STOPPING:
                return answer_stopping(r, id, started);
            case STEP_DONE:
                break;
        }
    }
    if (ag_aborted(r)) {
        return OK;
    }
    /* Done: commit, unless the client leaves before the response ends. */
    ag_register_cleanup(r, commit, (void*)id, ABORTGUARD_ON_SUCCESS);
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
