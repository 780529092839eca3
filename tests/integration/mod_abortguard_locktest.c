/* Test-only module (never installed): handlers that take file locks through
 * mod_abortguard's API, to test lock ownership from outside.
 *
 *   SetHandler abortguard-locktest
 *   GET ...?path=/abs/file&mode=ex|sh&timeout_ms=N&hold_ms=N&unlock=0|1
 *
 * It flushes "waiting\n" before it asks for the lock and "locked\n" once it
 * holds it, so a client knows where the handler is; then it holds the lock
 * for hold_ms (waking early if the client leaves) and unlocks unless
 * unlock=0 (a handler that "forgets"). The access log can show
 * AGT_LOCK (ok, timeup, aborted or an error number) and AGT_LOCKED_US
 * (CLOCK_MONOTONIC microseconds when the lock was acquired). */
#include <time.h>

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "mod_abortguard.h"
#include "module_helpers.h"

static APR_OPTIONAL_FN_TYPE(abortguard_lock_file) * lock_file;
static APR_OPTIONAL_FN_TYPE(abortguard_unlock) * unlock_fn;
static APR_OPTIONAL_FN_TYPE(abortguard_wait) * wait_fn;

static void retrieve_api(void) {
    lock_file = APR_RETRIEVE_OPTIONAL_FN(abortguard_lock_file);
    unlock_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_unlock);
    wait_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
}

static const char* now_us(request_rec* r) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                        (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

static const char* status_name(request_rec* r, apr_status_t rv) {
    if (rv == APR_SUCCESS)
        return "ok";
    if (rv == APR_TIMEUP)
        return "timeup";
    if (rv == APR_ECONNABORTED)
        return "aborted";
    return apr_psprintf(r->pool, "%d", rv);
}

static int locktest_handler(request_rec* r) {
    abortguard_lock_t* lock = NULL;
    apr_status_t rv;
    int exclusive;

    if (strcmp(r->handler, "abortguard-locktest") != 0) {
        return DECLINED;
    }
    if (lock_file == NULL || unlock_fn == NULL || wait_fn == NULL) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    exclusive = strcmp(module_arg(r, "mode", "ex"), "sh") != 0;
    ap_set_content_type(r, "text/plain");
    ap_rputs("waiting\n", r);
    ap_rflush(r);
    rv = lock_file(r, module_arg(r, "path", "/nonexistent"),
                   exclusive ? ABORTGUARD_LOCK_EXCLUSIVE : ABORTGUARD_LOCK_SHARED,
                   apr_time_from_msec(atoi(module_arg(r, "timeout_ms", "10000"))), &lock);
    apr_table_setn(r->subprocess_env, "AGT_LOCK", status_name(r, rv));
    if (rv != APR_SUCCESS) {
        return OK;
    }
    apr_table_setn(r->subprocess_env, "AGT_LOCKED_US", now_us(r));
    ap_rputs("locked\n", r);
    ap_rflush(r);
    wait_fn(r, apr_time_from_msec(atoi(module_arg(r, "hold_ms", "0"))));
    if (strcmp(module_arg(r, "unlock", "1"), "0") != 0) {
        unlock_fn(lock);
        unlock_fn(lock); /* twice is harmless */
    }
    ap_rputs("done\n", r);
    return OK;
}

static void register_hooks(apr_pool_t* p) {
    ap_hook_optional_fn_retrieve(retrieve_api, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(locktest_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_locktest_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks,
};
