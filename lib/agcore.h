/* The C boundary of the core, for httpd's glue (which is C).
 *
 * Opaque handles over the C++ objects; every function catches everything,
 * so no C++ exception ever reaches httpd. Errors are errno values.
 *
 * Thread contract: as the C++ classes they wrap (monitor.h, token.h):
 * tokens may be read and aborted from any thread; watch/unwatch from any
 * thread but the monitor's; abort callbacks run on the monitor thread;
 * ag_monitor_stop() is for the owner only and is safe on an exit path
 * entered from a signal handler. */
#ifndef ABORTGUARD_AGCORE_H
#define ABORTGUARD_AGCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Mirrors abortguard::Reason. */
typedef enum {
    AG_REASON_NONE = 0,
    AG_REASON_FIN = 1,
    AG_REASON_RST = 2,
    AG_REASON_ERROR = 3,
    AG_REASON_TIMEOUT = 4,
    AG_REASON_WRITE = 5
} ag_reason_e;

/* Mirrors abortguard::log::Level. */
typedef enum {
    AG_LOG_ERROR = 0,
    AG_LOG_WARN,
    AG_LOG_NOTICE,
    AG_LOG_INFO,
    AG_LOG_DEBUG,
    AG_LOG_TRACE
} ag_log_level_e;

typedef struct ag_monitor ag_monitor;
typedef struct ag_token ag_token;
typedef struct ag_registry ag_registry;
typedef uint64_t ag_watch_id;

#define AG_WATCH_IGNORE_HALF_CLOSE 1u

typedef void ag_log_sink_fn(ag_log_level_e level, const char* message, void* ctx);
/* reason: an ag_reason_e value */
typedef void ag_abort_fn(void* arg, int reason);
typedef void ag_cleanup_fn(void* arg, int aborted);

/* Mirrors abortguard::When; equal to the public ABORTGUARD_ON_* values. */
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
void ag_log_set_sink(ag_log_sink_fn* sink, void* ctx, ag_log_level_e max_level);

const char* ag_reason_name(ag_reason_e reason);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t ag_now_ns(void);

/* Starts a monitor thread. Returns 0, or an errno value and a message. */
int ag_monitor_start(ag_monitor** out, char* err, size_t errlen);

/* Stops the thread, waiting at most bound_ms; returns 1 if it exited. The
 * monitor's memory stays valid (unwatch still works) until process exit:
 * request threads of an exiting child may still hold watches. */
int ag_monitor_stop(ag_monitor* m, unsigned bound_ms);

/* Watches fd for the client going away: aborts `token`, then calls
 * fn(arg, reason) on the monitor thread. fd, token and arg must stay valid
 * until ag_monitor_unwatch() returns. Returns 0 or an errno value. */
int ag_monitor_watch(ag_monitor* m, int fd, unsigned flags, ag_token* token, ag_abort_fn* fn,
                     void* arg, ag_watch_id* id);

/* Synchronous: when it returns, no callback for `id` runs or will run. */
void ag_monitor_unwatch(ag_monitor* m, ag_watch_id id);

/* NULL when out of memory. */
ag_token* ag_token_create(void);
void ag_token_destroy(ag_token* t);
int ag_token_aborted(const ag_token* t);
ag_reason_e ag_token_reason(const ag_token* t);
int64_t ag_token_aborted_at_ns(const ag_token* t);
/* Aborts with `reason` now; returns 1 if this call aborted it. */
int ag_token_abort(ag_token* t, ag_reason_e reason);
/* Blocks until aborted or timeout_ns passed; returns ag_token_aborted(). */
int ag_token_wait(const ag_token* t, int64_t timeout_ns);
/* Calls fn(arg, reason) once when the token is aborted, on the aborting
 * thread, or at once if it already is. Returns 0 or ENOMEM. */
int ag_token_on_abort(ag_token* t, ag_abort_fn* fn, void* arg);

/* Cleanups (registry.h). NULL when out of memory. */
ag_registry* ag_registry_create(void);
void ag_registry_destroy(ag_registry* reg);
/* `identity` (usually the user's function) names it in log lines.
 * Returns 0, EINVAL for a bad `when`, ECANCELED once run, or ENOMEM. */
int ag_registry_add(ag_registry* reg, ag_cleanup_fn* fn, void* arg, int when, const void* identity);
/* Runs the selected cleanups newest first, once; slow_ns 0: no threshold. */
void ag_registry_run(ag_registry* reg, int aborted, int64_t slow_ns, ag_registry_summary* out);

/* Non-destructive socket check (probe.h): an ag_reason_e, AG_REASON_NONE
 * while the peer is there. Never reads, so it is safe on TLS sockets. */
int ag_probe_socket(int fd, int ignore_half_close);

/* "250ms", "2s", "1m" -> nanoseconds; returns 1 on success, 0 otherwise. */
int ag_parse_duration(const char* text, int64_t* ns);

#ifdef __cplusplus
}
#endif

#endif /* ABORTGUARD_AGCORE_H */
