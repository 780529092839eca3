#include "ag_lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "http_config.h"
#include "http_connection.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "util_filter.h"
#include "apr_portable.h"

#include "ag_config.h"
#include "ag_shm.h"
#include "agstats.h"
#include "scoreboard.h"
#include "ag_private.h"

#define AG_CONN_FILTER "ABORTGUARD_CONN"

/* Written in child_init, before any request thread exists. */
static ag_lifecycle* child_life;
static int tracking; /* client connections are tracked (synchronous MPMs) */
static ap_filter_rec_t* conn_filter;
static struct sigaction prev_graceful; /* prefork's own graceful handler */

/* ---- Connections -------------------------------------------------------
 *
 * Only under MPMs that handle a connection on one thread from start to end
 * (prefork, worker): there a thread waiting for a keep-alive client's next
 * request sits in a blocking read until the request or KeepAliveTimeout
 * comes, and the next request would be served by this old child with the
 * old configuration. The event MPM keeps idle connections in its own
 * listener and closes them itself when a child stops.
 *
 * The core's table holds our own duplicate of the socket descriptor: an MPM
 * may close a connection's socket from another thread (worker's ungraceful
 * stop), and a descriptor number must never be acted on once it may have
 * been reused. Our duplicate is closed only after the table let go of it
 * (synchronously), at pre_close_connection or, as a backstop, when the
 * connection's pool goes. */
typedef struct {
    int slot;   /* in the core's table; -1 once removed */
    int fd;     /* our duplicate of the client socket; -1 once closed */
    int idle;   /* between two requests (the owner thread's view) */
    int active; /* requests read and not yet logged: a pipelined request can
                   start before the previous one is logged */
} ag_conn;

static void untrack(ag_conn* cc) {
    if (cc->slot >= 0) {
        ag_conn_remove(child_life, cc->slot); /* waits out a shutdown in progress */
        cc->slot = -1;
    }
    if (cc->fd >= 0) {
        close(cc->fd);
        cc->fd = -1;
    }
}

/* Also on prefork's exit path inside a signal handler: lock-free. */
static apr_status_t untrack_cleanup(void* data) {
    untrack(data);
    return APR_SUCCESS;
}

static ag_conn* find_conn(const conn_rec* c) {
    ap_filter_t* f;
    for (f = c->input_filters; f != NULL; f = f->next) {
        if (f->frec == conn_filter) {
            return f->ctx;
        }
    }
    return NULL;
}

static int track_connection(conn_rec* c, void* csd) {
    apr_os_sock_t fd;
    ag_conn* cc;
    int dup;

    if (!tracking || c->master != NULL || c->outgoing || csd == NULL ||
        apr_os_sock_get(&fd, csd) != APR_SUCCESS) {
        return DECLINED;
    }
    if ((dup = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        return DECLINED;
    }
    cc = apr_palloc(c->pool, sizeof(*cc));
    cc->fd = dup;
    cc->idle = 0; /* a new connection's first request is never cut */
    cc->active = 0;
    if ((cc->slot = ag_conn_add(child_life, dup)) < 0) {
        close(dup);
        return DECLINED;
    }
    apr_pool_cleanup_register(c->pool, cc, untrack_cleanup, apr_pool_cleanup_null);
    ap_add_input_filter_handle(conn_filter, cc, NULL, c);
    return DECLINED;
}

/* Before the socket is shut down and closed. */
static int untrack_connection(conn_rec* c) {
    ag_conn* cc = tracking ? find_conn(c) : NULL;
    if (cc != NULL) {
        untrack(cc);
    }
    return DECLINED;
}

/* The next request's first bytes: the connection is busy again. */
static apr_status_t conn_in_filter(ap_filter_t* f, apr_bucket_brigade* bb, ap_input_mode_t mode,
                                   apr_read_type_e block, apr_off_t readbytes) {
    ag_conn* cc = f->ctx;
    apr_status_t rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
    if (cc->idle && rv == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb)) {
        cc->idle = 0;
        /* If the stop notice shut it down meanwhile, these bytes had
         * already arrived: the request is served, and since the MPM is
         * stopping its response says "Connection: close". */
        ag_conn_busy(child_life, cc->slot);
    }
    return rv;
}

/* A request ended (the EOR bucket went: its response is written) and the
 * connection waits for the next one. */
static int request_ended(request_rec* r) {
    conn_rec* c = r->connection;
    ag_conn* cc;

    if (r->main == NULL && ag_lifecycle_draining_now()) {
        c->keepalive = AP_CONN_CLOSE; /* after this response: no new work here */
    }
    if (!tracking || r->main != NULL || (cc = find_conn(c)) == NULL) {
        return DECLINED;
    }
    if (cc->active > 0) {
        --cc->active;
    }
    /* Idle only when no request of it is being handled: with pipelining,
     * this request's log (its buffered response written out) may come while
     * the next request reads its body. */
    if (cc->active > 0 || c->keepalive != AP_CONN_KEEPALIVE ||
        __atomic_load_n(&c->aborted, __ATOMIC_RELAXED) || cc->slot < 0) {
        return DECLINED;
    }
    /* A connection switched to another protocol (h2c, a WebSocket tunnel)
     * is never "between requests" for us. */
    if (strcmp(ap_get_protocol(c), AP_PROTOCOL_HTTP1) != 0) {
        return DECLINED;
    }
    cc->idle = 1;
    ag_conn_idle(child_life, cc->slot);
    return DECLINED;
}

/* A request was read: the connection is busy until it is logged. */
static int request_read(request_rec* r) {
    ag_conn* cc;
    if (!tracking || r->main != NULL || r->prev != NULL ||
        (cc = find_conn(r->connection)) == NULL) {
        return DECLINED;
    }
    ++cc->active;
    if (cc->idle) {
        cc->idle = 0;
        ag_conn_busy(child_life, cc->slot);
    }
    return DECLINED;
}

/* ---- The stop notice ---------------------------------------------------- */

#if AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
/* Event and worker call it when the child starts stopping (graceful or
 * not); prefork only on its way out (its graceful signal comes first). It
 * may run inside a signal handler: it only posts to the monitor thread. */
static void child_stopping(apr_pool_t* pchild, int graceful) {
    (void)pchild;
    if (child_life != NULL) {
        ag_lifecycle_notify_stop(child_life, graceful);
    }
}
#endif

/* prefork's AP_SIG_GRACEFUL handler closes the child's listeners and lets
 * the connection in progress finish; child_stopping follows only when the
 * child exits. Chained after prefork's own handler, this gives the stop
 * notice (and ends an idle keep-alive wait) when the signal comes.
 * Async-signal-safe. */
static void graceful_signal(int sig) {
    const int saved = errno;
    prev_graceful.sa_handler(sig);
    if (child_life != NULL) {
        ag_lifecycle_notify_stop(child_life, 1);
    }
    errno = saved;
}

static void chain_graceful_signal(server_rec* s) {
    struct sigaction cur, ours;

    if (strcmp(ap_show_mpm(), "prefork") != 0) {
        return;
    }
    if (sigaction(AP_SIG_GRACEFUL, NULL, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) ||
        cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "AG0007: prefork's graceful signal has no handler to follow; the stop "
                     "notice comes when the child exits");
        return;
    }
    prev_graceful = cur;
    ours = cur;
    ours.sa_handler = graceful_signal;
    sigaction(AP_SIG_GRACEFUL, &ours, NULL);
}

/* ---- The child's exit ---------------------------------------------------- */

/* A pre-cleanup of the child pool: it runs before every other cleanup of
 * the child's teardown (which may hang), also inside prefork's signal
 * handler: only posts. */
static apr_status_t exit_begins(void* data) {
    ag_lifecycle_notify_exit(data);
    return APR_SUCCESS;
}

int ag_lifecycle_keeps_monitor(void) {
    if (child_life == NULL) {
        return 0;
    }
    ag_lifecycle_note_child_cleanup(child_life);
    return ag_lifecycle_exit_bounded(child_life);
}

/* The server-wide bound on terminations lives in the shared stats block. */
static int permit_terminate(void* arg, int64_t now_ns, int64_t interval_ns) {
    (void)arg;
    return ag_stats_permit_terminate(ag_shm_block(), now_ns, interval_ns);
}

/* The drain's part in httpd (monitor thread): the scoreboard says this child
 * is quiescing, so the parent counts none of its threads as idle and starts
 * a replacement as soon as it has room. An MPM's own listener cannot be
 * stopped from a module; new requests are refused instead (refuse_new). */
static void drain_begins(void* arg) {
    process_score* ps;
    int slot = ap_find_child_by_pid(&(apr_proc_t){.pid = getpid()});
    (void)arg;
    if (slot >= 0 && (ps = ap_get_scoreboard_process(slot)) != NULL && ps->quiescing == 0) {
        ps->quiescing = 1;
    }
}

ag_lifecycle* ag_lifecycle_observer(void) {
    return child_life;
}

int ag_lifecycle_draining_now(void) {
    return child_life != NULL && ag_lifecycle_draining(child_life);
}

int ag_lifecycle_exiting_now(void) {
    return child_life != NULL && ag_lifecycle_exiting(child_life);
}

/* post_read_request, first: a draining child takes no new work. The client
 * is told to come again (to another child) and the connection closes. */
static int refuse_new(request_rec* r) {
    if (r->main != NULL || r->prev != NULL || !ag_lifecycle_draining_now()) {
        return DECLINED;
    }
    r->connection->keepalive = AP_CONN_CLOSE;
    apr_table_setn(r->err_headers_out, "Retry-After", "1");
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "AG0613: refused: this child is draining after AbortGuardGraceAction terminate");
    return HTTP_SERVICE_UNAVAILABLE;
}

void ag_lifecycle_child_init(apr_pool_t* pchild, server_rec* s, ag_monitor* monitor) {
    const ag_server_config* conf = ag_config_for_server(s);
    /* Static: the core keeps a pointer to it for the permit function. */
    static ag_lifecycle_config config;
    int async = 0, threads = 1, rv;
    char err[256];

    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS) {
        async = 0; /* prefork and worker do not know the question */
    }
    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS || threads < 1) {
        threads = 1;
    }
    memset(&config, 0, sizeof(config));
    config.grace_ns = conf->grace_ns;
    config.grace_terminate = conf->grace_action == AG_GRACE_TERMINATE;
    config.exit_timeout_ns = conf->exit_timeout_ns;
    /* A synchronous MPM has at most one connection per thread; a little
     * room for modules that run connections on threads of their own. */
    config.conn_capacity = async ? 0 : (size_t)threads + 8;
    config.terminate_interval_ns = conf->terminate_interval_ns;
    config.permit = permit_terminate;
    config.on_drain = drain_begins;
    rv = ag_lifecycle_start(monitor, &config, &child_life, err, sizeof(err));
    if (rv != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "AG0006: cannot set up the child's lifecycle (%s): no stop notice, grace "
                     "period or exit bound in this child",
                     err);
        child_life = NULL;
        return;
    }
    tracking = config.conn_capacity > 0;
    apr_pool_pre_cleanup_register(pchild, child_life, exit_begins);
    chain_graceful_signal(s);
}

void ag_lifecycle_register_hooks(apr_pool_t* p) {
    (void)p;
#if AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
    ap_hook_child_stopping(child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
#endif
    ap_hook_pre_connection(track_connection, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_close_connection(untrack_connection, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_log_transaction(request_ended, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_post_read_request(refuse_new, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_post_read_request(request_read, NULL, NULL, APR_HOOK_REALLY_FIRST);
    conn_filter =
        ap_register_input_filter(AG_CONN_FILTER, conn_in_filter, NULL, AP_FTYPE_CONNECTION);
}
