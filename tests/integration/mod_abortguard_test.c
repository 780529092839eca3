/*
 * mod_abortguard_test: test-only handlers for the integration tests.
 * Never installed.
 *
 * It simulates a handler of the mod_perl era: it knows nothing of
 * mod_abortguard and learns of a client abort only by polling
 * r->connection->aborted. It records, on CLOCK_MONOTONIC in microseconds
 * (the clock the test client uses too), when it started, when it noticed the
 * abort and when it ended, in r->subprocess_env so the access log can carry
 * them (%{AGT_START_US}e, %{AGT_NOTICED_US}e, %{AGT_END_US}e).
 *
 * Handlers:
 *   abortguard-test         query: ms=N (run time, default 5000),
 *                           flush=1 (send "started\n" at once, default 0),
 *                           poll=1 (check c->aborted every ms, default 1),
 *                           api=1 (instead, sleep in one abortguard_wait()
 *                           for the whole time: only mod_abortguard's own
 *                           verdict ends it early),
 *                           bytes=N (body bytes written at the end),
 *                           mark=PATH (create this file when the handler
 *                           starts: a test's sign that it runs, for a
 *                           handler that writes nothing yet).
 *                           Ends with "done\n" unless the abort was noticed.
 *   abortguard-test-upload  reads the whole request body, optional
 *                           delay_ms=N between reads, answers "received N\n".
 *   abortguard-test-sanitizer-selftest
 *                           the sanitizer pipeline's self-test: in the
 *                           ASan+UBSan build, kind=heap-use-after-free,
 *                           signed-overflow or pool-use-after-free commits
 *                           that bug on purpose, so that the sanitizer
 *                           reports it and ends the process; in the plain
 *                           build it does nothing and answers
 *                           "no sanitizer\n". ASan reports the heap use
 *                           after free, UBSan the overflow; the pool use
 *                           after free faults (and ASan reports the SEGV)
 *                           only with MaxMemFree 1 (see harness.cc).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* httpd.h first: the other httpd headers depend on it. */
#include "httpd.h"

#include "apr_strings.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_script.h"

#include "mod_abortguard.h"
#include "module_helpers.h"

module AP_MODULE_DECLARE_DATA abortguard_test_module;

static APR_OPTIONAL_FN_TYPE(abortguard_wait) * ag_wait;

static void retrieve_api(void) {
    ag_wait = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
}

/* One abortguard_wait() until end_us. Returns the time it woke for an
 * abort, or 0. */
static apr_int64_t wait_until(request_rec* r, apr_int64_t end_us) {
    apr_int64_t left = end_us - module_monotonic_us();
    if (ag_wait != NULL && left > 0 && ag_wait(r, left) == APR_ECONNABORTED) {
        return module_monotonic_us();
    }
    return 0;
}

static void note_us(request_rec* r, const char* name, apr_int64_t us) {
    apr_table_setn(r->subprocess_env, name, apr_psprintf(r->pool, "%" APR_INT64_T_FMT, us));
}

/* Sleeps in 1 ms steps until end_us; with poll, stops as soon as
 * c->aborted is set. Returns the time it noticed the abort, or 0. */
static apr_int64_t compute_until(request_rec* r, apr_int64_t end_us, int poll) {
    for (;;) {
        if (poll && r->connection->aborted) {
            return module_monotonic_us();
        }
        if (module_monotonic_us() >= end_us) {
            return 0;
        }
        apr_sleep(1000);
    }
}

/* Writes `bytes` filler bytes; stops when a write fails or, with poll,
 * when c->aborted is set. Returns the time it noticed the abort, or 0. */
static apr_int64_t write_filler(request_rec* r, apr_int64_t bytes, int poll) {
    char block[8192];

    memset(block, 'x', sizeof(block));
    while (bytes > 0) {
        int n = bytes < (apr_int64_t)sizeof(block) ? (int)bytes : (int)sizeof(block);
        if (poll && r->connection->aborted) {
            return module_monotonic_us();
        }
        if (ap_rwrite(block, n, r) < 0) {
            /* A failed write is an abort even for a handler that does not
             * poll; it must stop writing either way. */
            return poll ? module_monotonic_us() : 0;
        }
        bytes -= n;
    }
    return 0;
}

static int slow_handler(request_rec* r) {
    apr_int64_t start_us, noticed_us;
    int flush, poll;

    if (!r->handler || strcmp(r->handler, "abortguard-test") != 0) {
        return DECLINED;
    }
    start_us = module_monotonic_us();
    note_us(r, "AGT_START_US", start_us);
    flush = module_arg_int(r, "flush", 0) != 0;
    poll = module_arg_int(r, "poll", 1) != 0;
    if (module_arg(r, "mark", NULL) != NULL) {
        int fd = open(module_arg(r, "mark", NULL), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            close(fd);
        }
    }

    ap_set_content_type(r, "text/plain");
    if (flush) {
        /* Status, headers and a first line reach the client at once, so it
         * knows the handler runs before it closes. */
        ap_rputs("started\n", r);
        ap_rflush(r);
    }
    if (module_arg_int(r, "api", 0) != 0) {
        noticed_us = wait_until(r, start_us + module_arg_int(r, "ms", 5000) * 1000);
    } else {
        noticed_us = compute_until(r, start_us + module_arg_int(r, "ms", 5000) * 1000, poll);
    }
    if (!noticed_us) {
        noticed_us = write_filler(r, module_arg_int(r, "bytes", 0), poll);
    }
    if (noticed_us) {
        note_us(r, "AGT_NOTICED_US", noticed_us);
    } else {
        ap_rputs("done\n", r);
    }
    note_us(r, "AGT_END_US", module_monotonic_us());
    return OK;
}

static int upload_handler(request_rec* r) {
    apr_int64_t delay_ms;
    apr_off_t total = 0;
    char buf[16384];
    long n;
    int rv;

    if (!r->handler || strcmp(r->handler, "abortguard-test-upload") != 0) {
        return DECLINED;
    }
    delay_ms = module_arg_int(r, "delay_ms", 0);
    rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
    if (rv != OK) {
        return rv;
    }
    /* ap_should_client_block sends "100 Continue" when the client asked. */
    if (ap_should_client_block(r)) {
        while ((n = ap_get_client_block(r, buf, sizeof(buf))) > 0) {
            total += n;
            if (delay_ms > 0) {
                apr_sleep(apr_time_from_msec(delay_ms));
            }
        }
        if (n < 0) {
            return HTTP_BAD_REQUEST;
        }
    }
    ap_set_content_type(r, "text/plain");
    ap_rprintf(r, "received %" APR_OFF_T_FMT "\n", total);
    return OK;
}

/* Built with AddressSanitizer (GCC defines __SANITIZE_ADDRESS__, clang
 * answers __has_feature); the ASan build also has UBSan (Makefile.am). */
#if defined(__SANITIZE_ADDRESS__)
#define AGT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AGT_SANITIZED 1
#endif
#endif

static int sanitizer_selftest_handler(request_rec* r) {
    const char* kind;

    if (!r->handler || strcmp(r->handler, "abortguard-test-sanitizer-selftest") != 0) {
        return DECLINED;
    }
    kind = module_arg(r, "kind", NULL);
    ap_set_content_type(r, "text/plain");
#ifndef AGT_SANITIZED
    (void)kind;
    ap_rputs("no sanitizer\n", r);
    return OK;
#else
    if (kind == NULL) {
        ap_rputs("sanitizer\n", r);
        return OK;
    }
    if (strcmp(kind, "heap-use-after-free") == 0) {
        /* A volatile pointer: the compiler cannot see the use after free
         * (-Wuse-after-free) nor drop it. */
        char* volatile block = malloc(16);
        if (block == NULL) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        block[0] = 'x';
        free(block);
        ap_rprintf(r, "survived %d\n", block[0]); /* ASan: heap-use-after-free */
    } else if (strcmp(kind, "signed-overflow") == 0) {
        volatile int big = INT_MAX;
        int sum = big + 1; /* UBSan: signed integer overflow */
        ap_rprintf(r, "survived %d\n", sum);
    } else if (strcmp(kind, "pool-use-after-free") == 0) {
        /* Pool memory after its pool is gone: seen only when the allocator
         * unmapped the block at once (the harness's MaxMemFree 1), as a
         * SEGV that ASan reports; otherwise the read just succeeds. */
        apr_pool_t* sub;
        char* volatile p;
        if (apr_pool_create(&sub, r->pool) != APR_SUCCESS) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        p = apr_pcalloc(sub, 64);
        apr_pool_destroy(sub);
        ap_rprintf(r, "survived %d\n", p[0]); /* ASan: heap-use-after-free */
    } else {
        return HTTP_NOT_FOUND;
    }
    /* Reached only when the sanitizer missed it. */
    return OK;
#endif
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_optional_fn_retrieve(retrieve_api, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(slow_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(upload_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(sanitizer_selftest_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA abortguard_test_module = {STANDARD20_MODULE_STUFF,
                                                        NULL, /* create per-dir config */
                                                        NULL, /* merge per-dir config */
                                                        NULL, /* create per-server config */
                                                        NULL, /* merge per-server config */
                                                        NULL, /* command table */
                                                        register_hooks,
                                                        AP_MODULE_FLAG_NONE};
