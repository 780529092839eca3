/* The child's monitor thread and the core's log sink (see ag_child.h). */
#include "ag_child.h"

#include "mpm_common.h"

#include "ag_config.h"
#include "ag_lifecycle.h"
#include "ag_private.h"

/* How long a stopping child waits for the monitor thread to exit. */
#define AG_MONITOR_JOIN_MS 1000

static server_rec* log_server;

/* Any thread: ap_log_error with only a server_rec touches no request or
 * connection memory. */
static void log_sink(ag_log_level_e level, const char* message, void* ctx) {
    static const int aplevel[] = {APLOG_ERR,  APLOG_WARNING, APLOG_NOTICE,
                                  APLOG_INFO, APLOG_DEBUG,   APLOG_TRACE1};
    (void)ctx;
    ap_log_error(APLOG_MARK, aplevel[level], 0, log_server, "%s", message);
}

/* The core formats a message only if httpd would write it. */
static ag_log_level_e core_log_level(server_rec* s) {
    int level = ap_get_server_module_loglevel(s, APLOG_MODULE_INDEX);
    if (level <= APLOG_ERR) {
        return AG_LOG_ERROR;
    }
    if (level >= APLOG_TRACE1) {
        return AG_LOG_TRACE;
    }
    return (ag_log_level_e)(AG_LOG_ERROR + (level - APLOG_ERR));
}

/* Child exit path; under prefork it may run inside a signal handler that
 * interrupted the main thread anywhere, so the stop takes no lock. With an
 * exit bound (AbortGuardExitTimeout) the monitor thread is the watchdog of
 * the rest of the exit: it keeps running until the process is gone. */
static apr_status_t stop_monitor(void* data) {
    if (ag_lifecycle_keeps_monitor()) {
        ag_monitor_retire(data);
        return APR_SUCCESS;
    }
    /* The handle stays set: a request thread of this exiting child may still
     * unwatch (ag_monitor_stop keeps the monitor's memory valid for that). */
    if (!ag_monitor_stop(data, AG_MONITOR_JOIN_MS)) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, log_server,
                     "AG0003: monitor thread did not exit within %d ms", AG_MONITOR_JOIN_MS);
    }
    return APR_SUCCESS;
}

/* Set in the child's start-up, before any request thread exists; never
 * cleared (see ag_child.h). */
static ag_monitor* child_monitor;

ag_monitor* ag_child_monitor(void) {
    return child_monitor;
}

/* AbortGuardMonitorNice. When many clients leave at once the monitor wakes
 * their handlers, and on a busy machine those threads would keep it off the
 * CPU while later aborts wait to be detected; a negative nice value lets it
 * run first (it does little per event, so it cannot starve them in turn). */
static void set_monitor_priority(server_rec* s) {
    int nice = ag_config_for_server(s)->monitor_nice;
    int rv = nice < 0 ? ag_monitor_set_nice(child_monitor, nice) : 0;
    if (rv != 0) {
        ap_log_error(APLOG_MARK, APLOG_INFO, rv, s,
                     "AG0008: the monitor thread keeps the request threads' nice value "
                     "(AbortGuardMonitorNice %d needs httpd started as root, or CAP_SYS_NICE); "
                     "it still asks the kernel for a short time slice",
                     nice);
    } else if (nice < 0) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "AG0010: monitor thread at nice %d", nice);
    }
}

/* The core blocks every signal on its thread. */
static void start_monitor(server_rec* s) {
    char err[256];
    int rv;
    if (child_monitor != NULL) {
        return;
    }
    log_server = s;
    ag_log_set_sink(log_sink, NULL, core_log_level(s));
    rv = ag_monitor_start(&child_monitor, err, sizeof(err));
    if (rv != 0) {
        child_monitor = NULL;
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "AG0001: cannot start the abort monitor (%s); client aborts will only "
                     "be seen on failed writes",
                     err);
        return;
    }
    set_monitor_priority(s);
}

/* Raising a thread's priority takes CAP_SYS_NICE, which a child has only
 * until mod_unixd's drop_privileges hook switches it to User. This one runs
 * first, so the monitor thread starts (and gets its priority) as root; the
 * switch then applies to it as to every thread, and its nice value stays. */
static int start_monitor_as_root(apr_pool_t* pchild, server_rec* s) {
    (void)pchild;
    start_monitor(s);
    return DECLINED;
}

/* Signals are blocked while child_init runs. */
static void child_init(apr_pool_t* pchild, server_rec* s) {
    start_monitor(s); /* if drop_privileges did not run */
    if (child_monitor == NULL) {
        return;
    }
    apr_pool_cleanup_register(pchild, child_monitor, stop_monitor, apr_pool_cleanup_null);
    ag_lifecycle_child_init(pchild, s, child_monitor);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "AG0002: abort monitor started");
}

void ag_child_register_hooks(apr_pool_t* p) {
    (void)p;
    /* Before mod_unixd's (APR_HOOK_MIDDLE) gives up root. */
    ap_hook_drop_privileges(start_monitor_as_root, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
}
