/* Test-only module (never installed): handlers for the child lifecycle tests
 * (stop notice, keep-alive connections across a graceful restart, grace
 * period, exit bound), using mod_abortguard's public API only.
 *
 *   SetHandler abortguard-lifetest
 *   GET ...?mode=M&...
 *
 * Every response body starts with a line "<word> <pid>\n" flushed at once,
 * so a client knows which child serves it and where the handler is.
 *
 *   mode=longpoll&max_ms=N   "started PID"; then waits (abortguard_wait, 1 s
 *                            steps) up to max_ms for the stop notice or the
 *                            client's abort; "stopping US stopping=0|1",
 *                            "aborted US" or "timeout". US: CLOCK_MONOTONIC
 *                            microseconds when it noticed. The access log can
 *                            show AGT_OUTCOME (stop/abort/timeout) and
 *                            AGT_NOTICED_US.
 *   mode=hang&path=P&hold_ms=N  locks P (exclusive, no wait), registers an
 *                            on-abort cleanup that writes "aborted=A pid=PID"
 *                            into P.cleanup, says "locked PID", then ignores
 *                            its client's abort for hold_ms (a hung handler).
 *   mode=lock&path=P&timeout_ms=N  "locked PID" or "timeup PID"; unlocks.
 *   mode=hangcleanup&cleanup_ms=N  "done PID"; registers a cleanup (always)
 *                            that sleeps cleanup_ms, ignoring everything.
 *   mode=rollback&path=P&cleanup_ms=N  locks P, registers an on-abort
 *                            cleanup that works cleanup_ms (checking every
 *                            10 ms that it still holds the lock: an OFD lock
 *                            of its own on P must fail) and then writes
 *                            "rolled_back held_throughout=0|1" into
 *                            P.cleanup; says "locked PID", waits for the
 *                            client to leave and returns at once.
 *   mode=churn&ms=N           "started PID", then for ms uses the API in a
 *                            loop (cleanups, callbacks, a lock of P, waits):
 *                            a request that allocates and locks all the time,
 *                            for SIGTERM to interrupt anywhere.
 *   mode=tag                 "tag VALUE PID" and a header X-Lifetest-Tag:
 *                            VALUE, from the directive LifeTestTag.
 *
 * LifeTestHangAtExit MS (main server): a child pool cleanup that sleeps MS,
 * run after mod_abortguard's own child cleanup (a hung child teardown).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "mod_abortguard.h"
#include "module_helpers.h"

module AP_MODULE_DECLARE_DATA abortguard_lifetest_module;

static APR_OPTIONAL_FN_TYPE(abortguard_wait) * wait_fn;
static APR_OPTIONAL_FN_TYPE(abortguard_stopping) * stopping_fn;
static APR_OPTIONAL_FN_TYPE(abortguard_lock_file) * lock_file;
static APR_OPTIONAL_FN_TYPE(abortguard_unlock) * unlock_fn;
static APR_OPTIONAL_FN_TYPE(abortguard_register_cleanup) * cleanup_fn;

typedef struct {
    const char* tag;
    int hang_at_exit_ms; /* LifeTestHangAtExit; main server only */
} lifetest_config;

static void retrieve_api(void) {
    wait_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_wait);
    stopping_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_stopping);
    lock_file = APR_RETRIEVE_OPTIONAL_FN(abortguard_lock_file);
    unlock_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_unlock);
    cleanup_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void say(request_rec* r, const char* word) {
    ap_rprintf(r, "%s %d\n", word, (int)getpid());
    ap_rflush(r);
}

static int longpoll(request_rec* r) {
    const apr_int64_t end =
        module_monotonic_us() + atoi(module_arg(r, "max_ms", "30000")) * (apr_int64_t)1000;
    say(r, "started");
    for (;;) {
        apr_int64_t left = end - module_monotonic_us();
        apr_status_t rv;
        if (left <= 0) {
            apr_table_setn(r->subprocess_env, "AGT_OUTCOME", "timeout");
            ap_rputs("timeout\n", r);
            return OK;
        }
        rv = wait_fn(r, left < 1000000 ? left : 1000000);
        if (rv == APR_EINTR) {
            const char* us = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, module_monotonic_us());
            apr_table_setn(r->subprocess_env, "AGT_OUTCOME", "stop");
            apr_table_setn(r->subprocess_env, "AGT_NOTICED_US", us);
            ap_rprintf(r, "stopping %s stopping=%d\n", us, stopping_fn(r));
            return OK;
        }
        if (rv == APR_ECONNABORTED) {
            const char* us = apr_psprintf(r->pool, "%" APR_INT64_T_FMT, module_monotonic_us());
            apr_table_setn(r->subprocess_env, "AGT_OUTCOME", "abort");
            apr_table_setn(r->subprocess_env, "AGT_NOTICED_US", us);
            ap_rprintf(r, "aborted %s\n", us);
            return OK;
        }
    }
}

/* Runs on the monitor thread when AbortGuardGraceAction terminate gives up
 * on the handler: touches only its own data (a path copied into the pool
 * before the handler started hanging, which the pool keeps). */
static void hang_cleanup(request_rec* r, void* data, int aborted) {
    char text[64];
    int fd = open(data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    (void)r;
    if (fd >= 0) {
        int n = snprintf(text, sizeof(text), "aborted=%d pid=%d\n", aborted, (int)getpid());
        if (write(fd, text, (size_t)n) < 0) {
            /* nothing to do: the test sees no marker */
        }
        close(fd);
    }
}

static int hang(request_rec* r) {
    const char* path = module_arg(r, "path", "/nonexistent");
    const apr_int64_t end =
        module_monotonic_us() + atoi(module_arg(r, "hold_ms", "15000")) * (apr_int64_t)1000;
    abortguard_lock_t* lock = NULL;
    if (lock_file(r, path, ABORTGUARD_LOCK_EXCLUSIVE, 0, &lock) != APR_SUCCESS) {
        say(r, "busy");
        return OK;
    }
    cleanup_fn(r, hang_cleanup, apr_pstrcat(r->pool, path, ".cleanup", NULL), ABORTGUARD_ON_ABORT);
    say(r, "locked");
    while (module_monotonic_us() < end) {
        sleep_ms(10); /* ignores the abort: the handler that hangs */
    }
    return OK;
}

/* Whether this process can take P now (an OFD lock of its own). */
static int lock_free(const char* path) {
    struct flock fl;
    int fd = open(path, O_RDWR | O_CLOEXEC), held;
    if (fd < 0) {
        return 0;
    }
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    held = fcntl(fd, F_OFD_SETLK, &fl) == 0;
    close(fd);
    return held;
}

typedef struct {
    const char* path;
    long ms;
} rollback_job;

static void slow_rollback(request_rec* r, void* data, int aborted) {
    const rollback_job* job = data;
    char marker[512], text[64];
    int held = 1, fd, n;
    long waited;
    (void)r;
    (void)aborted;
    for (waited = 0; waited < job->ms; waited += 10) {
        sleep_ms(10);
        held = held && !lock_free(job->path);
    }
    snprintf(marker, sizeof(marker), "%s.cleanup", job->path);
    if ((fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) >= 0) {
        n = snprintf(text, sizeof(text), "rolled_back held_throughout=%d\n", held);
        if (write(fd, text, (size_t)n) < 0) {
            /* the test sees no marker */
        }
        close(fd);
    }
}

static int rollback(request_rec* r) {
    rollback_job* job = apr_pcalloc(r->pool, sizeof(*job));
    abortguard_lock_t* lock = NULL;
    job->path = module_arg(r, "path", "/nonexistent");
    job->ms = atol(module_arg(r, "cleanup_ms", "2000"));
    if (lock_file(r, job->path, ABORTGUARD_LOCK_EXCLUSIVE, 0, &lock) != APR_SUCCESS) {
        say(r, "busy");
        return OK;
    }
    cleanup_fn(r, slow_rollback, job, ABORTGUARD_ON_ABORT);
    say(r, "locked");
    while (wait_fn(r, apr_time_from_sec(30)) != APR_ECONNABORTED) {
    }
    return OK; /* promptly: only the rollback takes time */
}

static void churn_cleanup(request_rec* r, void* data, int aborted) {
    (void)r;
    (void)data;
    (void)aborted;
}

static int churn(request_rec* r) {
    const apr_int64_t end =
        module_monotonic_us() + atoi(module_arg(r, "ms", "1000")) * (apr_int64_t)1000;
    const char* path = module_arg(r, "path", "/nonexistent");
    int i = 0;
    say(r, "started");
    while (module_monotonic_us() < end) {
        abortguard_lock_t* lock = NULL;
        apr_pool_t* scratch;
        if (++i % 64 == 0 && cleanup_fn(r, churn_cleanup, NULL, ABORTGUARD_ALWAYS) != APR_SUCCESS) {
            /* the request's bound: fine, the churn goes on */
        }
        if (lock_file(r, path, ABORTGUARD_LOCK_SHARED, 0, &lock) == APR_SUCCESS) {
            unlock_fn(lock);
        }
        apr_pool_create(&scratch, r->pool); /* malloc and free, all the time */
        apr_palloc(scratch, 16384);
        apr_pool_destroy(scratch);
        wait_fn(r, 100);
    }
    ap_rputs("done\n", r);
    return OK;
}

static int lock(request_rec* r) {
    abortguard_lock_t* lock = NULL;
    apr_status_t rv = lock_file(r, module_arg(r, "path", "/nonexistent"), ABORTGUARD_LOCK_EXCLUSIVE,
                                apr_time_from_msec(atoi(module_arg(r, "timeout_ms", "0"))), &lock);
    say(r, rv == APR_SUCCESS ? "locked" : rv == APR_TIMEUP ? "timeup" : "failed");
    if (rv == APR_SUCCESS) {
        unlock_fn(lock);
    }
    return OK;
}

static void sleepy_cleanup(request_rec* r, void* data, int aborted) {
    (void)r;
    (void)aborted;
    sleep_ms((long)(apr_uintptr_t)data);
}

static int hangcleanup(request_rec* r) {
    long ms = atol(module_arg(r, "cleanup_ms", "30000"));
    cleanup_fn(r, sleepy_cleanup, (void*)(apr_uintptr_t)ms, ABORTGUARD_ALWAYS);
    ap_rprintf(r, "done %d\n", (int)getpid());
    return OK;
}

static int tag(request_rec* r) {
    const lifetest_config* conf =
        ap_get_module_config(r->per_dir_config, &abortguard_lifetest_module);
    const char* value = conf->tag ? conf->tag : "-";
    char* body = apr_psprintf(r->pool, "tag %s %d\n", value, (int)getpid());
    apr_table_setn(r->headers_out, "X-Lifetest-Tag", value);
    ap_set_content_length(r, (apr_off_t)strlen(body));
    ap_rputs(body, r);
    return OK;
}

static int lifetest_handler(request_rec* r) {
    const char* mode;
    if (strcmp(r->handler, "abortguard-lifetest") != 0) {
        return DECLINED;
    }
    ap_set_content_type(r, "text/plain");
    mode = module_arg(r, "mode", "");
    if (!strcmp(mode, "tag")) /* also without mod_abortguard (stock httpd) */
        return tag(r);
    if (wait_fn == NULL || stopping_fn == NULL || lock_file == NULL || unlock_fn == NULL ||
        cleanup_fn == NULL) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!strcmp(mode, "longpoll"))
        return longpoll(r);
    if (!strcmp(mode, "hang"))
        return hang(r);
    if (!strcmp(mode, "lock"))
        return lock(r);
    if (!strcmp(mode, "hangcleanup"))
        return hangcleanup(r);
    if (!strcmp(mode, "rollback"))
        return rollback(r);
    if (!strcmp(mode, "churn"))
        return churn(r);
    return HTTP_BAD_REQUEST;
}

static void* create_config(apr_pool_t* p, char* dir) {
    (void)dir;
    return apr_pcalloc(p, sizeof(lifetest_config));
}

static void* merge_config(apr_pool_t* p, void* basev, void* addv) {
    lifetest_config* merged = apr_pcalloc(p, sizeof(*merged));
    const lifetest_config *base = basev, *add = addv;
    merged->tag = add->tag ? add->tag : base->tag;
    merged->hang_at_exit_ms = add->hang_at_exit_ms ? add->hang_at_exit_ms : base->hang_at_exit_ms;
    return merged;
}

static const char* set_tag(cmd_parms* cmd, void* conf, const char* value) {
    (void)cmd;
    ((lifetest_config*)conf)->tag = value;
    return NULL;
}

static const char* set_hang_at_exit(cmd_parms* cmd, void* conf, const char* ms) {
    (void)cmd;
    ((lifetest_config*)conf)->hang_at_exit_ms = atoi(ms);
    return NULL;
}

static const command_rec lifetest_directives[] = {
    AP_INIT_TAKE1("LifeTestTag", set_tag, NULL, RSRC_CONF | ACCESS_CONF,
                  "the value mode=tag answers with"),
    AP_INIT_TAKE1("LifeTestHangAtExit", set_hang_at_exit, NULL, RSRC_CONF,
                  "a child-exit cleanup sleeps this many ms"),
    {NULL}};

/* A child pool cleanup that hangs. Registered from the first child_init of
 * all, so it runs last: after mod_abortguard's own child cleanup. */
static apr_status_t hang_at_exit(void* data) {
    sleep_ms((long)(apr_uintptr_t)data);
    return APR_SUCCESS;
}

static void child_init(apr_pool_t* pchild, server_rec* s) {
    const lifetest_config* conf =
        ap_get_module_config(s->lookup_defaults, &abortguard_lifetest_module);
    if (conf->hang_at_exit_ms > 0) {
        apr_pool_cleanup_register(pchild, (void*)(apr_uintptr_t)conf->hang_at_exit_ms, hang_at_exit,
                                  apr_pool_cleanup_null);
    }
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_optional_fn_retrieve(retrieve_api, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(lifetest_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_REALLY_FIRST);
}

module AP_MODULE_DECLARE_DATA abortguard_lifetest_module = {
    STANDARD20_MODULE_STUFF, create_config,  merge_config, NULL, NULL,
    lifetest_directives,     register_hooks,
};
