/* Directives, the per-directory configuration and the process-wide one.
 *
 * Thread contract: configuration is built single-threaded at startup and
 * read-only afterwards; the accessors may be called from any thread. */
#ifndef AG_CONFIG_H
#define AG_CONFIG_H

#include "httpd.h"
#include "http_config.h"

/* A directive not given in a scope: inherit from the enclosing one. */
#define AG_UNSET (-1)

typedef enum { AG_HALF_CLOSE_ABORT = 0, AG_HALF_CLOSE_IGNORE = 1 } ag_half_close_e;
typedef enum { AG_GRACE_LOG = 0, AG_GRACE_TERMINATE = 1 } ag_grace_action_e;

typedef struct {
    int enabled;                 /* AbortGuard: 1, 0 or AG_UNSET */
    int half_close;              /* AbortGuardHalfClose: ag_half_close_e or AG_UNSET */
    int mark_conn;               /* AbortGuardMarkConnection: 1, 0 or AG_UNSET */
    apr_int64_t cleanup_warn_ns; /* AbortGuardCleanupWarn, 0: off; or AG_UNSET */
    apr_int64_t lock_warn_ns;    /* AbortGuardLockWarn, 0: off; or AG_UNSET */
    int proxy;                   /* AbortGuardProxy: 1, 0 or AG_UNSET */
    int log_status;              /* AbortGuardLogStatus: a status, 0: off; or AG_UNSET */
    int ka_idle_s;               /* AbortGuardKeepAlive, 0: off; or AG_UNSET */
    int ka_interval_s;           /* ... set together with ka_idle_s */
    int ka_count;
    int stop_aborts;    /* AbortGuardStopAborts: 1, 0 or AG_UNSET */
    int skip_abandoned; /* AbortGuardSkipAbandoned: 1, 0 or AG_UNSET */
} ag_dir_config;

/* The directives that shape the child process (its monitor thread and its
 * lifecycle). A child has one of each whichever virtual host its requests
 * belong to, so they are accepted in the main server's configuration only
 * (httpd names the section otherwise) and need no merge: created with their
 * defaults, overwritten where the main server sets them. */
typedef struct {
    apr_int64_t grace_ns;              /* AbortGuardGracePeriod, 0: off */
    int grace_action;                  /* AbortGuardGraceAction: ag_grace_action_e */
    apr_int64_t exit_timeout_ns;       /* AbortGuardExitTimeout, 0: off */
    int monitor_nice;                  /* AbortGuardMonitorNice, -20..0 */
    apr_int64_t terminate_interval_ns; /* AbortGuardTerminateInterval */
} ag_server_config;

extern const command_rec ag_directives[];

void* ag_dir_config_create(apr_pool_t* p, char* dir);
void* ag_dir_config_merge(apr_pool_t* p, void* basev, void* addv);
void* ag_server_config_create(apr_pool_t* p, server_rec* s);

/* The merged configuration of `r`'s location; never NULL. */
const ag_dir_config* ag_config_for(const request_rec* r);

/* Effective values, defaults applied. */
int ag_config_enabled(const ag_dir_config* conf);
/* AbortGuard Off given explicitly: the API must not start monitoring. */
int ag_config_forbidden(const ag_dir_config* conf);
apr_int64_t ag_config_cleanup_warn_ns(const ag_dir_config* conf);
apr_int64_t ag_config_lock_warn_ns(const ag_dir_config* conf);
int ag_config_ignores_half_close(const ag_dir_config* conf);
int ag_config_marks_connection(const ag_dir_config* conf);
/* AbortGuardProxy: shut the backend connection down on abort. */
int ag_config_proxy(const ag_dir_config* conf);
/* AbortGuardLogStatus: the status to log for an aborted request, 0: off. */
int ag_config_log_status(const ag_dir_config* conf);
/* AbortGuardKeepAlive: 1 and the settings when on, 0 when off. */
int ag_config_keepalive(const ag_dir_config* conf, int* idle_s, int* interval_s, int* count);
int ag_config_stop_aborts(const ag_dir_config* conf);
/* AbortGuardSkipAbandoned: a request whose client already left is not
 * handed to its handler. */
int ag_config_skip_abandoned(const ag_dir_config* conf);

/* The process-wide settings, defaults applied; `s` is the main server (as
 * handed to post_config and child_init). Never NULL. */
const ag_server_config* ag_config_for_server(const server_rec* s);

#endif /* AG_CONFIG_H */
