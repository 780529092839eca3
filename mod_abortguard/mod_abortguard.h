/* mod_abortguard: the public interface for module authors and admins' tools.
 *
 * Other modules use these APR optional functions without linking to
 * mod_abortguard: retrieve them with APR_RETRIEVE_OPTIONAL_FN in your
 * optional_fn_retrieve hook (or per request); each is NULL when
 * mod_abortguard is not loaded, so a module can degrade gracefully.
 *
 *     static APR_OPTIONAL_FN_TYPE(abortguard_aborted) *ag_aborted;
 *     static void retrieve(void) {
 *         ag_aborted = APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted);
 *     }
 *     ... ap_hook_optional_fn_retrieve(retrieve, NULL, NULL, APR_HOOK_MIDDLE);
 *
 * Monitoring on demand: calling any of these functions for a request that no
 * AbortGuard directive covers starts monitoring that request; an explicit
 * "AbortGuard Off" forbids monitoring, and the functions then reflect only
 * failed writes (r->connection->aborted). Subrequests act on their main
 * request; internal redirects keep the original request's state.
 *
 * Threads: call every function from the request's own thread, while the
 * request is being handled. Once a request is monitored (a first call on its
 * thread, or AbortGuard On), abortguard_aborted(), abortguard_stopping() and
 * abortguard_wait() may also be called from other threads until the handler
 * returns.
 *
 * The access log sees the outcome through these request environment
 * variables, set in log_transaction before mod_log_config writes:
 *   ABORTGUARD_ABORTED  "1" when the client went away before the response
 *                       completed; unset otherwise (%{...}e prints "-")
 *   ABORTGUARD_REASON   "fin", "rst", "error", "timeout", "write",
 *                       "h2-reset", and "server-stop" under AbortGuardStopAborts On
 *   ABORTGUARD_SKIPPED  "1" when the request was never handed to its handler
 *                       because its client had left while it waited
 *                       (AbortGuardSkipAbandoned); unset otherwise
 *
 * Stop notice: when the child process that handles a request starts
 * stopping (apachectl graceful, graceful-stop, stop, restart; the MPM
 * retiring the child), every request in progress gets a stop notice, which
 * is not an abort: abortguard_stopping() turns nonzero and abortguard_wait()
 * returns APR_EINTR early, so a long-poll or a stream can end its response
 * cleanly while the client is still there. Requests that begin in a
 * stopping child get it at once. "AbortGuardStopAborts On" makes the notice
 * an abort instead (reason "server-stop", cleanups selected as aborted). */
#ifndef MOD_ABORTGUARD_H
#define MOD_ABORTGUARD_H

#include "httpd.h"
#include "http_config.h"
#include "apr_optional.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "abortguard_version.h" /* ABORTGUARD_VERSION */

#define ABORTGUARD_ENV_ABORTED "ABORTGUARD_ABORTED"
#define ABORTGUARD_ENV_REASON "ABORTGUARD_REASON"
#define ABORTGUARD_ENV_SKIPPED "ABORTGUARD_SKIPPED"

/* abortguard_register_cleanup(): when a cleanup runs. */
#define ABORTGUARD_ON_ABORT 1   /* run only if the client went away */
#define ABORTGUARD_ON_SUCCESS 2 /* run only if it did not */
#define ABORTGUARD_ALWAYS 3

/* abortguard_probe(): what to check (a bit set). */
#define ABORTGUARD_PROBE_SOCKET 1 /* non-destructive socket check */
#define ABORTGUARD_PROBE_FLUSH 2  /* flush pending output and see if the write fails */

/* A cleanup: `r` is the request it was registered for (the main request for
 * a subrequest), `aborted` whether the client went away before the response
 * completed. It runs at the end of the request, before the request pool's
 * other cleanups, so r and r->pool are still usable.
 *
 * Except for one case: `aborted` is ABORTGUARD_ABORTED_TERMINATING when
 * AbortGuardGraceAction terminate gave up on a handler still running long
 * after its client left. Then the cleanup runs on mod_abortguard's monitor
 * thread while the hung handler's thread still runs, just before the child
 * process ends: it must NOT touch r, its pools, filters or connection, nor
 * data the handler uses without a lock; it may release what it owns by
 * itself (roll back through its own database handle, remove its temp file,
 * signal another process). Tests like "if (aborted)" keep working. */
#define ABORTGUARD_ABORTED_TERMINATING 2
typedef void abortguard_cleanup_fn(request_rec* r, void* data, int aborted);

/* An abort callback: runs once on mod_abortguard's monitor thread the moment
 * the abort is detected (or at once on the caller's thread if the request is
 * already aborted; on the request thread if a failed write is seen first).
 * It must be short and must not block; it must NOT touch the request_rec,
 * its pools, filters or connection: the request thread is using them at the
 * same time. Signal your own thread-safe state (an atomic, an eventfd, a
 * condition variable) instead. `reason` is one of the AG reasons
 * (1 fin, 2 rst, 3 error, 4 timeout, 5 write, 6 h2-reset, 7 server-stop).
 * `data` must stay valid until the request ends. */
typedef void abortguard_abort_fn(void* data, int reason);

/* Nonzero once the client went away. Cheap (no syscall after the first call
 * of a request), safe in a tight loop. */
APR_DECLARE_OPTIONAL_FN(int, abortguard_aborted, (request_rec * r));

/* Registers fn(r, data, aborted) to run once at the end of the request,
 * newest first, if `when` selects the outcome (ABORTGUARD_ON_ABORT,
 * ABORTGUARD_ON_SUCCESS or ABORTGUARD_ALWAYS). A cleanup registered after
 * the abort still runs at the end. Returns APR_SUCCESS, APR_EINVAL (bad fn or
 * when), APR_EGENERAL (the request has ended) or APR_ENOMEM. */
APR_DECLARE_OPTIONAL_FN(apr_status_t, abortguard_register_cleanup,
                        (request_rec * r, abortguard_cleanup_fn* fn, void* data, int when));

/* Sleeps up to `timeout` (microseconds); returns APR_ECONNABORTED at once
 * when the client leaves (or has left), APR_TIMEUP otherwise; and
 * APR_EINTR when the child's stop notice (see above) interrupts the wait.
 * APR_EINTR is reported once: to every wait in progress when the notice
 * comes, or else to the first wait that starts after it; later waits sleep
 * normally, so a loop that retries on anything but APR_ECONNABORTED never
 * spins. Check abortguard_stopping() to know for good. */
APR_DECLARE_OPTIONAL_FN(apr_status_t, abortguard_wait,
                        (request_rec * r, apr_interval_time_t timeout));

/* Checks now, synchronously; nonzero: aborted. ABORTGUARD_PROBE_SOCKET asks
 * the kernel about the socket (never reads, never peeks: safe under TLS);
 * conclusive for a FIN or RST that has arrived. ABORTGUARD_PROBE_FLUSH
 * flushes the output written so far and reports a failed write; it is
 * conclusive only once the client's RST has arrived, which usually takes a
 * first write after the client left (the kernel accepts that one), and it
 * never adds bytes to the body. Before the response has started it flushes
 * only the connection, so the status and headers stay open. */
APR_DECLARE_OPTIONAL_FN(int, abortguard_probe, (request_rec * r, int flags));

/* Locks bound to the request (OFD file locks: they exclude other threads of
 * the same process as well as other processes). A lock the handler does not
 * unlock is released when the request ends, whatever happened; waiting for
 * one ends as soon as the client leaves. */
typedef struct abortguard_lock_t abortguard_lock_t;
#define ABORTGUARD_LOCK_SHARED 1
#define ABORTGUARD_LOCK_EXCLUSIVE 2

/* Opens `path` (created 0644 if missing) and locks the whole file, waiting
 * up to `timeout` microseconds (0: try once; negative: no limit). Returns
 * APR_SUCCESS; APR_TIMEUP; APR_ECONNABORTED if the client left while
 * waiting; APR_EINVAL for bad arguments; otherwise the errno-based status of
 * open/lock. `*lock` stays valid until the request ends. */
APR_DECLARE_OPTIONAL_FN(apr_status_t, abortguard_lock_file,
                        (request_rec * r, const char* path, int flags, apr_interval_time_t timeout,
                         abortguard_lock_t** lock));

/* Releases the lock; unlocking twice is harmless. */
APR_DECLARE_OPTIONAL_FN(apr_status_t, abortguard_unlock, (abortguard_lock_t * lock));

/* Not part of the original contract, available since 0.2.0: */

/* Registers fn(data, reason) to run once when the client goes away; see
 * abortguard_abort_fn for what it may touch. APR_SUCCESS or APR_ENOMEM. */
APR_DECLARE_OPTIONAL_FN(apr_status_t, abortguard_on_abort,
                        (request_rec * r, abortguard_abort_fn* fn, void* data));

/* "fin", "rst", "write", ... once aborted; NULL while not. */
APR_DECLARE_OPTIONAL_FN(const char*, abortguard_reason, (request_rec * r));

/* Added with the child lifecycle: */

/* Nonzero once the request got the stop notice: its child process is
 * stopping (graceful or not) and the handler should finish its response
 * soon. Cheap, no syscall. With AbortGuardStopAborts On the request is then
 * aborted too (abortguard_aborted(), reason "server-stop"). */
APR_DECLARE_OPTIONAL_FN(int, abortguard_stopping, (request_rec * r));

/* Added with the benchmarks: */

/* When the abort was detected, in CLOCK_MONOTONIC microseconds (compare with
 * clock_gettime(CLOCK_MONOTONIC) to learn how long ago the client left, or
 * how late a handler noticed); 0 while the request is not aborted. Cheap,
 * no syscall. */
APR_DECLARE_OPTIONAL_FN(apr_int64_t, abortguard_aborted_at, (request_rec * r));

extern module AP_MODULE_DECLARE_DATA abortguard_module;

#ifdef __cplusplus
}
#endif

#endif /* MOD_ABORTGUARD_H */
