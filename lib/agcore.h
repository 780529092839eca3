/* The C boundary of the core, for httpd's glue (which is C).
 *
 * Opaque handles over the C++ objects. Every function is noexcept; the ones
 * that call what can throw (allocation, a caller's callback) catch it and
 * return an errno value, and a throw anywhere else would end in
 * std::terminate at this boundary, never unwind through httpd.
 *
 * Thread contract: as the C++ classes they wrap (monitor.h, request_state.h):
 * a request's state may be read, aborted and waited on from any thread, and
 * is created, given locks and destroyed on its request's thread;
 * watch/unwatch from any thread but the monitor's; abort callbacks run on
 * the monitor thread; ag_monitor_stop() is for the owner only and is safe on
 * an exit path entered from a signal handler. */
#ifndef ABORTGUARD_AGCORE_H
#define ABORTGUARD_AGCORE_H

#include <stddef.h>
#include <stdint.h>

#include "inflight.h" /* ag_inflight_info */

/* Every entry point is noexcept for C++ callers and the definitions must
 * match: an exception can never unwind into httpd's C frames. */
#ifdef __cplusplus
#define AG_NOEXCEPT noexcept
#else
#define AG_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Mirrors abortguard::Reason (checked in agcore.cc). */
typedef enum {
    AG_REASON_NONE = 0,
    AG_REASON_FIN = 1,
    AG_REASON_RST = 2,
    AG_REASON_ERROR = 3,
    AG_REASON_TIMEOUT = 4,
    AG_REASON_WRITE = 5,
    AG_REASON_H2_RESET = 6,
    AG_REASON_SERVER_STOP = 7
} ag_reason_e;

/* Mirrors abortguard::log::Level (checked in agcore.cc). */
typedef enum {
    AG_LOG_ERROR = 0,
    AG_LOG_WARN,
    AG_LOG_NOTICE,
    AG_LOG_INFO,
    AG_LOG_DEBUG,
    AG_LOG_TRACE
} ag_log_level_e;

typedef struct ag_monitor ag_monitor;
typedef struct ag_lifecycle ag_lifecycle; /* the child's stop/grace/exit logic */
typedef struct ag_state ag_state;         /* one request: token, cleanups, locks */
/* A file lock bound to a request: its state, the lock record's slot there
 * and the record's generation (records are reused once released: a handle
 * whose record now holds another lock is stale, and ignored). */
typedef struct {
    ag_state* state; /* NULL: no lock */
    uint32_t slot;
    uint32_t gen;
} ag_lock_ref;
typedef uint64_t ag_watch_id;

#define AG_WATCH_IGNORE_HALF_CLOSE 1u
#define AG_WATCH_FRESH_SOCKET 2u /* never watched before: a new connection */
#define AG_WATCH_SAME_SOCKET 4u  /* the previous watch of this fd was this socket */
#define AG_WATCH_TUNNEL 8u       /* a tunnel: HUP without error is an orderly close */

typedef void ag_log_sink_fn(ag_log_level_e level, const char* message, void* ctx);
/* reason: an ag_reason_e value */
typedef void ag_abort_fn(void* arg, int reason);
/* A cleanup: the caller's trampoline gets back the caller's function (cast
 * to a generic function pointer, which C allows and reverses) and two
 * arguments. aborted: 0, 1, or AG_ABORTED_TERMINATING when a terminate
 * grace action runs it on the monitor thread. */
#define AG_ABORTED_TERMINATING 2 /* the public ABORTGUARD_ABORTED_TERMINATING */
typedef void ag_any_fn(void);
typedef void ag_cleanup_fn(ag_any_fn* user, void* arg1, void* arg2, int aborted);

/* Mirror abortguard::CleanupWhen (checked in agcore.cc); equal to the
 * public ABORTGUARD_ON_* values (checked in ag_api.c). */
#define AG_WHEN_ON_ABORT 1
#define AG_WHEN_ON_SUCCESS 2
#define AG_WHEN_ALWAYS 3

typedef struct {
    int run;    /* cleanups called */
    int failed; /* ... that threw */
    int slow;   /* ... slower than the threshold */
    int64_t total_ns;
    int64_t slowest_ns;
} ag_registry_summary;

/* Installs the core's log sink; before any other thread runs. */
void ag_log_set_sink(ag_log_sink_fn* sink, void* ctx, ag_log_level_e max_level) AG_NOEXCEPT;

const char* ag_reason_name(ag_reason_e reason) AG_NOEXCEPT;

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t ag_now_ns(void) AG_NOEXCEPT;
/* Microseconds to nanoseconds, saturating at INT64_MIN/INT64_MAX. */
int64_t ag_us_to_ns(int64_t us) AG_NOEXCEPT;
/* Nonzero on a monitor thread (an abort callback, a grace action): code
 * that may run there must neither block nor touch request memory. */
int ag_on_monitor_thread(void) AG_NOEXCEPT;

/* "250ms", "2s", "1m" -> nanoseconds; returns 1 on success, 0 otherwise. */
int ag_parse_duration(const char* text, int64_t* ns) AG_NOEXCEPT;

/* ---- The monitor (monitor.h) ---- */

/* Starts a monitor thread. Returns 0, or an errno value and a message. */
int ag_monitor_start(ag_monitor** out, char* err, size_t errlen) AG_NOEXCEPT;

/* Stops the thread, waiting at most bound_ms; returns 1 if it exited. The
 * monitor's memory stays valid (unwatch still works) until process exit:
 * request threads of an exiting child may still hold watches. */
int ag_monitor_stop(ag_monitor* m, unsigned bound_ms) AG_NOEXCEPT;

/* Watches fd for the client going away: aborts `state`'s token, then calls
 * fn(arg, reason) on the monitor thread. fd, state and arg must stay valid
 * until ag_monitor_unwatch() returns. Returns 0 or an errno value. */
int ag_monitor_watch(ag_monitor* m, int fd, unsigned flags, ag_state* state, ag_abort_fn* fn,
                     void* arg, ag_watch_id* id) AG_NOEXCEPT;

/* Synchronous: when it returns, no callback for `id` runs or will run. */
void ag_monitor_unwatch(ag_monitor* m, ag_watch_id id) AG_NOEXCEPT;

/* Sets the monitor thread's nice value (Monitor::set_nice). Returns 0 or an
 * errno value (EACCES/EPERM: no CAP_SYS_NICE and too little RLIMIT_NICE). */
int ag_monitor_set_nice(ag_monitor* m, int nice) AG_NOEXCEPT;

/* watch() fails from now on; the thread keeps running timers and posted
 * work until the process exits (the lifecycle's exit watchdog).
 * Async-signal-safe. */
void ag_monitor_retire(ag_monitor* m) AG_NOEXCEPT;

/* ---- The child's lifecycle (lifecycle.h) ---- */

typedef struct {
    int64_t grace_ns;        /* <= 0: no grace timer */
    int grace_terminate;     /* 0: log only */
    int64_t exit_timeout_ns; /* <= 0: no exit bound */
    size_t conn_capacity;    /* 0: client connections are not tracked */
    /* Terminate's rate bound: none in a child's first interval, and
     * permit(arg, now_ns, interval) for the server-wide one (NULL: none). */
    int64_t terminate_interval_ns;
    int (*permit)(void* arg, int64_t now_ns, int64_t interval_ns);
    void* permit_arg;
    /* The owner's part of a drain (monitor thread; must not block). */
    void (*on_drain)(void* arg);
    void* drain_arg;
} ag_lifecycle_config;

/* Creates the lifecycle on `m`'s thread; requests learn of it through
 * ag_state_create's `observer`. Never destroyed (it outlives every state).
 * Returns 0, or an errno value and a message. */
int ag_lifecycle_start(ag_monitor* m, const ag_lifecycle_config* config, ag_lifecycle** out,
                       char* err, size_t errlen) AG_NOEXCEPT;
/* Async-signal-safe: the child is stopping (stop notice), its exit began
 * (exit bound), its owner's own child cleanup ran (for reports). */
void ag_lifecycle_notify_stop(ag_lifecycle* l, int graceful) AG_NOEXCEPT;
void ag_lifecycle_notify_exit(ag_lifecycle* l) AG_NOEXCEPT;
void ag_lifecycle_note_child_cleanup(ag_lifecycle* l) AG_NOEXCEPT;
/* A terminate began the drain: take no new work. Any thread. */
int ag_lifecycle_draining(const ag_lifecycle* l) AG_NOEXCEPT;
/* The child's exit has begun (its pool's teardown; under prefork, often
 * inside a signal handler). Async-signal-safe. */
int ag_lifecycle_exiting(const ag_lifecycle* l) AG_NOEXCEPT;
int ag_lifecycle_exit_bounded(const ag_lifecycle* l) AG_NOEXCEPT;

/* Client connections (conn_table.h); lock-free and async-signal-safe. A
 * slot of -1 (not tracked) is accepted everywhere and does nothing. */
int ag_conn_add(ag_lifecycle* l, int fd) AG_NOEXCEPT; /* slot, or -1 */
void ag_conn_idle(ag_lifecycle* l, int slot) AG_NOEXCEPT;
/* 0 if the stop notice shut the connection down before these bytes came. */
int ag_conn_busy(ag_lifecycle* l, int slot) AG_NOEXCEPT;
/* Synchronous: afterwards the fd is never touched; call before closing it. */
void ag_conn_remove(ag_lifecycle* l, int slot) AG_NOEXCEPT;

/* ---- A request's state (request_state.h) ---- */

/* Listed in this process's in-flight table until destroyed; `vhost` names
 * its virtual host there (the status page filters on it). NULL when out of
 * memory. AG_STATE_STOP_ABORTS: the stop notice aborts it (reason
 * server-stop). `observer` (may be NULL) is the child's lifecycle, which
 * the state reports to (stop notice, grace timer); it must outlive it. */
#define AG_STATE_STOP_ABORTS 1u
ag_state* ag_state_create(const char* uri, const char* handler, uint64_t vhost, unsigned flags,
                          ag_lifecycle* observer) AG_NOEXCEPT;
/* Releases locks still held (returns how many) and frees everything. */
int ag_state_destroy(ag_state* s) AG_NOEXCEPT;

int ag_state_aborted(const ag_state* s) AG_NOEXCEPT;
ag_reason_e ag_state_reason(const ag_state* s) AG_NOEXCEPT;
int64_t ag_state_aborted_at_ns(const ag_state* s) AG_NOEXCEPT;
int64_t ag_state_start_ns(const ag_state* s) AG_NOEXCEPT;
/* Aborts with `reason` now; returns 1 if this call aborted it. */
int ag_state_abort(ag_state* s, ag_reason_e reason) AG_NOEXCEPT;
/* The stop notice reached the request (see Token::stop). */
int ag_state_stopping(const ag_state* s) AG_NOEXCEPT;
/* Blocks until the request is aborted, the stop notice interrupts the wait
 * (once per wait; see Token::wait_event) or timeout_ns passed (saturating:
 * INT64_MAX waits for ever): AG_WAIT_TIMEOUT, AG_WAIT_ABORTED or
 * AG_WAIT_STOPPED. */
#define AG_WAIT_TIMEOUT 0
#define AG_WAIT_ABORTED 1
#define AG_WAIT_STOPPED 2
int ag_state_wait_event(const ag_state* s, int64_t timeout_ns) AG_NOEXCEPT;
/* The handler's response is complete; a stop notice no longer applies. */
void ag_state_set_response_done(ag_state* s) AG_NOEXCEPT;
/* Calls fn(arg, reason) once when the request is aborted, on the aborting
 * thread, or at once if it already is. Returns 0, ENOSPC (the request's
 * bound on callbacks) or ENOMEM. */
int ag_state_on_abort(ag_state* s, ag_abort_fn* fn, void* arg) AG_NOEXCEPT;

/* Cleanups (registry.h): tramp(user, arg1, arg2, aborted); nothing is
 * allocated in the caller's memory, so any thread may add one. `identity`
 * (usually the user's function) names it in log lines. Returns 0, EINVAL
 * for a bad `when`, ECANCELED once run, ENOSPC (the request's bound) or
 * ENOMEM. */
int ag_state_add_cleanup(ag_state* s, ag_cleanup_fn* tramp, ag_any_fn* user, void* arg1, void* arg2,
                         int when, const void* identity) AG_NOEXCEPT;
/* Runs the selected cleanups newest first, once; slow_ns 0: no threshold. */
void ag_state_run_cleanups(ag_state* s, int aborted, int64_t slow_ns,
                           ag_registry_summary* out) AG_NOEXCEPT;

/* Locks `path` (file_lock.h) for the request, waiting up to timeout_ns
 * (negative: forever; saturating). Returns 0, ETIMEDOUT, ECONNABORTED (the
 * client left while waiting), ENOSPC (the request holds its bound of
 * locks), ELOOP (a symlink), EINVAL (not a regular file), or the errno of
 * open/lock. A lock held longer than warn_ns (0: never) is logged at warn
 * when released. */
int ag_state_lock_file(ag_state* s, const char* path, int exclusive, int64_t timeout_ns,
                       int64_t warn_ns, ag_lock_ref* out) AG_NOEXCEPT;
/* Harmless when already released or stale; valid until the state goes. */
void ag_lock_release(ag_lock_ref lock) AG_NOEXCEPT;

/* This process's in-flight requests; fn runs under the table's lock: copy,
 * don't block. */
void ag_inflight_foreach(ag_inflight_fn* fn, void* ctx) AG_NOEXCEPT;

/* ---- Interop (upstream_cut.h, flag_watch.h, keepalive.h) ---- */

/* A proxy's backend socket, shut down (SHUT_RDWR) the moment the request is
 * aborted -- at once if it already is -- after before(arg) ran on the
 * aborting thread (usually the monitor's; short, non-blocking). Request
 * thread; `fd` must stay open until the matching disarm returns. One socket
 * at a time: arming again replaces. Returns 0 or ENOMEM; *id names it. */
typedef void ag_upstream_fn(void* arg);
int ag_state_arm_upstream(ag_state* s, int fd, ag_upstream_fn* before, void* arg,
                          uint64_t* id) AG_NOEXCEPT;
/* Synchronous: when it returns, the socket armed under `id` is not being
 * and will not be touched. Returns 1 if it was shut down. A stale id is
 * ignored (returns 0). */
int ag_state_disarm_upstream(ag_state* s, uint64_t id) AG_NOEXCEPT;

/* Watches a flag that another thread sets when the client went away (an
 * HTTP/2 stream's c->aborted): polled on the monitor thread every ~10 ms
 * only while such watches exist. Aborts `state` with `reason`, then calls
 * fn(arg, reason) on the monitor thread. flag, state and arg must stay
 * valid until ag_monitor_unwatch_flag() returns. Returns 0 or an errno. */
int ag_monitor_watch_flag(ag_monitor* m, const unsigned* flag, ag_reason_e reason, ag_state* state,
                          ag_abort_fn* fn, void* arg, ag_watch_id* id) AG_NOEXCEPT;
/* Synchronous, as ag_monitor_unwatch(). */
void ag_monitor_unwatch_flag(ag_monitor* m, ag_watch_id id) AG_NOEXCEPT;
/* The flags may have just been set (mod_http2 processed its client's frames,
 * or its connection ended): checks them on the monitor thread at once. A
 * relaxed load and nothing more while no flag is watched. Any thread. */
void ag_monitor_nudge_flags(ag_monitor* m) AG_NOEXCEPT;
/* The same for an event after which the flags are set a little later by a
 * thread the caller cannot wait for (a connection's end): checks over the
 * next 8 ms. */
void ag_monitor_nudge_flags_soon(ag_monitor* m) AG_NOEXCEPT;

/* TCP keepalive on a client socket while its request is monitored. */
typedef struct {
    int saved; /* 0: nothing to restore */
    int keepalive, idle_s, interval_s, count;
    unsigned user_timeout_ms;
} ag_keepalive_saved;
/* Saves the current settings, then sets SO_KEEPALIVE, TCP_KEEPIDLE,
 * TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT (idle + interval *
 * count). Returns 0 or an errno (then nothing changed). */
int ag_keepalive_apply(int fd, int idle_s, int interval_s, int count,
                       ag_keepalive_saved* saved) AG_NOEXCEPT;
/* Puts the saved settings back; harmless when nothing was saved. */
void ag_keepalive_restore(int fd, ag_keepalive_saved* saved) AG_NOEXCEPT;

/* Non-destructive socket check (probe.h): an ag_reason_e, AG_REASON_NONE
 * while the peer is there. Never reads, so it is safe on TLS sockets. */
int ag_probe_socket(int fd, int ignore_half_close) AG_NOEXCEPT;
/* The same for a tunnel's socket (see AG_WATCH_TUNNEL). */
int ag_probe_tunnel(int fd) AG_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* ABORTGUARD_AGCORE_H */
