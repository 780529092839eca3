/*
 * mod_abortguard_bench: the benchmarks' handler. Never installed.
 *
 * Handler abortguard-bench, query:
 *   (none)        answers "ok\n" at once: the tiny handler of the throughput runs
 *   hold=MS       flushes "started\n", then holds the request up to MS ms,
 *                 polling c->aborted every poll_us microseconds (default
 *                 1000), as a handler of the mod_perl era would
 *   fired=0       do not ask mod_abortguard for the abort callback
 *
 * It notes on CLOCK_MONOTONIC, in microseconds (the benchmark client's
 * clock): AGB_START_US, AGB_FIRED_US (mod_abortguard's abort callback ran on
 * its monitor thread, i.e. the token fired) and AGB_NOTICED_US (the poll saw
 * c->aborted), for %{...}e in a log format.
 */
#include <time.h>

/* httpd.h first: the other httpd headers depend on it. */
#include "httpd.h"

#include "apr_optional.h"
#include "apr_strings.h"
#include "http_config.h"
#include "http_protocol.h"
#include "util_script.h"

#include "mod_abortguard.h"

module AP_MODULE_DECLARE_DATA abortguard_bench_module;

static APR_OPTIONAL_FN_TYPE(abortguard_on_abort) * on_abort;

static apr_int64_t monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (apr_int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static apr_int64_t arg_int(apr_table_t* args, const char* name, apr_int64_t dflt) {
    const char* value = apr_table_get(args, name);
    return value ? apr_atoi64(value) : dflt;
}

static void note_us(request_rec* r, const char* name, apr_int64_t us) {
    if (us != 0) {
        apr_table_setn(r->subprocess_env, name, apr_psprintf(r->pool, "%" APR_INT64_T_FMT, us));
    }
}

/* Monitor thread: only our own word, never the request. */
static void fired(void* data, int reason) {
    (void)reason;
    __atomic_store_n((apr_int64_t*)data, monotonic_us(), __ATOMIC_RELEASE);
}

static int hold(request_rec* r, apr_table_t* args) {
    apr_int64_t* fired_us = apr_pcalloc(r->pool, sizeof(*fired_us));
    apr_int64_t start = monotonic_us(), noticed = 0;
    apr_int64_t end = start + arg_int(args, "hold", 0) * 1000;
    apr_interval_time_t poll = (apr_interval_time_t)arg_int(args, "poll_us", 1000);

    note_us(r, "AGB_START_US", start);
    if (on_abort != NULL && arg_int(args, "fired", 1) != 0) {
        on_abort(r, fired, fired_us);
    }
    ap_rputs("started\n", r);
    ap_rflush(r);
    while (monotonic_us() < end) {
        if (r->connection->aborted) {
            noticed = monotonic_us();
            break;
        }
        apr_sleep(poll);
    }
    note_us(r, "AGB_FIRED_US", __atomic_load_n(fired_us, __ATOMIC_ACQUIRE));
    note_us(r, "AGB_NOTICED_US", noticed);
    if (!noticed) {
        ap_rputs("done\n", r);
    }
    return OK;
}

static int bench_handler(request_rec* r) {
    apr_table_t* args;
    if (!r->handler || strcmp(r->handler, "abortguard-bench") != 0) {
        return DECLINED;
    }
    ap_args_to_table(r, &args);
    ap_set_content_type(r, "text/plain");
    if (apr_table_get(args, "hold") != NULL) {
        return hold(r, args);
    }
    ap_rputs("ok\n", r);
    return OK;
}

static void retrieve(void) {
    on_abort = APR_RETRIEVE_OPTIONAL_FN(abortguard_on_abort);
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_optional_fn_retrieve(retrieve, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bench_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_bench_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks, AP_MODULE_FLAG_NONE};
