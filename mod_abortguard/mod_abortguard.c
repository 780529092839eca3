/* mod_abortguard: notices the moment a client goes away while its request is
 * still being handled. This file is the module's skeleton: process-level
 * setup (log sink, the per-child monitor thread) and hook registration.
 * Requests are handled in ag_request.c, directives in ag_config.c. */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "ag_api.h"
#include "ag_config.h"
#include "ag_interop.h"
#include "ag_lifecycle.h"
#include "ag_request.h"
#include "ag_status.h"
#include "agcore.h"
#include "mod_abortguard.h"

APLOG_USE_MODULE(abortguard);

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
    if (!ag_monitor_stop(data, AG_MONITOR_JOIN_MS)) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, log_server,
                     "AG0003: monitor thread did not exit within %d ms", AG_MONITOR_JOIN_MS);
    }
    ag_request_set_monitor(NULL);
    return APR_SUCCESS;
}

/* Signals are blocked while child_init runs, and the core blocks them all
 * on its thread anyway. */
static void child_init(apr_pool_t* pchild, server_rec* s) {
    ag_monitor* monitor = NULL;
    char err[256];
    int rv;

    log_server = s;
    ag_log_set_sink(log_sink, NULL, core_log_level(s));
    rv = ag_monitor_start(&monitor, err, sizeof(err));
    if (rv != 0) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "AG0001: cannot start the abort monitor (%s); client aborts will only "
                     "be seen on failed writes",
                     err);
        return;
    }
    ag_request_set_monitor(monitor);
    apr_pool_cleanup_register(pchild, monitor, stop_monitor, apr_pool_cleanup_null);
    ag_lifecycle_child_init(pchild, s, monitor);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "AG0002: abort monitor started");
}

static void register_hooks(apr_pool_t* p) {
    (void)p;
    ag_api_register();
    ag_status_register_hooks(p);
    ag_proxy_register_hooks(p);
    ag_lifecycle_register_hooks(p);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    /* Last, so that redirects made by other fixups (mod_dir) are settled. */
    ap_hook_fixups(ag_request_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    /* Before mod_log_config writes the line. */
    ap_hook_log_transaction(ag_request_log_transaction, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ag_request_register_filter();
}

module AP_MODULE_DECLARE_DATA abortguard_module = {STANDARD20_MODULE_STUFF,
                                                   ag_dir_config_create,
                                                   ag_dir_config_merge,
                                                   NULL, /* server config */
                                                   NULL, /* merge server config */
                                                   ag_directives,
                                                   register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
                                                   AP_MODULE_FLAG_NONE
#endif
};
