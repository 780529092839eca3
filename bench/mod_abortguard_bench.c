/*
 * mod_abortguard_bench: the benchmarks' handler. Never installed.
 *
 * Handler abortguard-bench, query:
 *   (none)        answers "ok\n" at once: the tiny handler of the throughput runs
 *   hold=MS       flushes "started\n", then holds the request up to MS ms,
 *                 polling c->aborted every poll_us microseconds (default
 *                 1000), as a handler of the mod_perl era would
 *   wait=1        with hold: blocks in abortguard_wait() instead of polling,
 *                 as a handler written against mod_abortguard's API would
 *   flag_us=US    with hold and wait=1: a second thread polls c->aborted every
 *                 US microseconds meanwhile and notes AGB_FLAG_US, when it first
 *                 saw the flag set (under mod_http2: mod_http2's own flag on the
 *                 stream's connection), beside the wait's wake-up
 *
 * It notes on CLOCK_MONOTONIC, in microseconds (the benchmark client's
 * clock): AGB_START_US, AGB_DETECTED_US (mod_abortguard detected the abort:
 * abortguard_aborted_at()) and AGB_NOTICED_US (the poll saw c->aborted, or
 * abortguard_wait() returned), for %{...}e in a log format.
 */
#include <time.h>

/* httpd.h first: the other httpd headers depend on it. */
#include "httpd.h"

#include "apr_optional.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"
#include "http_config.h"
#include "http_protocol.h"
#include "util_script.h"

#include "mod_abortguard.h"
#include "../tests/integration/module_helpers.h"

module AP_MODULE_DECLARE_DATA abortguard_bench_module;

static APR_OPTIONAL_FN_TYPE(abortguard_aborted_at) * aborted_at;
static APR_OPTIONAL_FN_TYPE(abortguard_wait) * ag_wait;

static void note_us(request_rec* r, const char* name, apr_int64_t us) {
    if (us != 0) {
        apr_table_setn(r->subprocess_env, name, apr_psprintf(r->pool, "%" APR_INT64_T_FMT, us));
    }
}

/* When the poll saw c->aborted; 0 if it did not before `end`. */
static apr_int64_t poll_aborted(request_rec* r, apr_int64_t end, apr_interval_time_t poll) {
    while (module_monotonic_us() < end) {
        if (r->connection->aborted) {
            return module_monotonic_us();
        }
        apr_sleep(poll);
    }
    return 0;
}

/* The flag watcher: polls c->aborted until it is set or it is told to stop. */
typedef struct {
    conn_rec* c;
    apr_interval_time_t period;
    volatile int stop;
    apr_int64_t seen; /* when the flag was first seen set; 0: never */
} flag_watch;

static void* APR_THREAD_FUNC watch_flag(apr_thread_t* t, void* data) {
    flag_watch* w = data;
    (void)t;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&w->c->aborted, __ATOMIC_RELAXED)) {
            __atomic_store_n(&w->seen, module_monotonic_us(), __ATOMIC_RELEASE);
            break;
        }
        apr_sleep(w->period);
    }
    return NULL;
}

static int hold(request_rec* r) {
    apr_int64_t start = module_monotonic_us(), noticed = 0;
    apr_int64_t end = start + module_arg_int(r, "hold", 0) * 1000;
    apr_interval_time_t poll = (apr_interval_time_t)module_arg_int(r, "poll_us", 1000);
    apr_interval_time_t flag_period = (apr_interval_time_t)module_arg_int(r, "flag_us", 0);

    note_us(r, "AGB_START_US", start);
    ap_rputs("started\n", r);
    ap_rflush(r);
    if (ag_wait != NULL && module_arg_int(r, "wait", 0) != 0) {
        flag_watch w = {r->connection, flag_period, 0, 0};
        apr_thread_t* watcher = NULL;
        apr_status_t ignored;
        if (flag_period > 0 &&
            apr_thread_create(&watcher, NULL, watch_flag, &w, r->pool) != APR_SUCCESS) {
            watcher = NULL;
        }
        if (ag_wait(r, end - start) == APR_ECONNABORTED) {
            noticed = module_monotonic_us();
        }
        if (watcher != NULL) {
            /* Give the watcher a moment to see the flag the wake-up implies. */
            apr_int64_t until = module_monotonic_us() + 20000;
            while (noticed != 0 && !__atomic_load_n(&w.seen, __ATOMIC_RELAXED) &&
                   module_monotonic_us() < until) {
                apr_sleep(100);
            }
            __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
            apr_thread_join(&ignored, watcher);
            note_us(r, "AGB_FLAG_US", w.seen);
        }
    } else {
        noticed = poll_aborted(r, end, poll);
    }
    note_us(r, "AGB_DETECTED_US", aborted_at != NULL ? aborted_at(r) : 0);
    note_us(r, "AGB_NOTICED_US", noticed);
    if (!noticed) {
        ap_rputs("done\n", r);
    }
    return OK;
}

static int bench_handler(request_rec* r) {
    if (!r->handler || strcmp(r->handler, "abortguard-bench") != 0) {
        return DECLINED;
    }
    ap_set_content_type(r, "text/plain");
    if (module_arg(r, "hold", NULL) != NULL) {
        return hold(r);
    }
    ap_rputs("ok\n", r);
    return OK;
}

static void retrieve(void) {
    aborted_at = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted_at);
    ag_wait = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_optional_fn_retrieve(retrieve, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bench_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_bench_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, register_hooks, AP_MODULE_FLAG_NONE};
