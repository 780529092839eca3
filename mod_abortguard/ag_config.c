/* All of mod_abortguard's directives, in one place. */
#include "ag_config.h"

#include <stdlib.h>

#include "http_log.h"
#include "apr_strings.h"

#include "agcore.h"
#include "ag_private.h"

#define AG_DEFAULT_CLEANUP_WARN_NS APR_INT64_C(1000000000)
#define AG_DEFAULT_GRACE_NS APR_INT64_C(30000000000)
#define AG_DEFAULT_EXIT_TIMEOUT_NS APR_INT64_C(5000000000)
#define AG_DEFAULT_MONITOR_NICE (-20)
#define AG_DEFAULT_TERMINATE_INTERVAL_NS APR_INT64_C(10000000000)

/* The value of `field` for `conf`, or `dflt` where no scope set it. */
#define AG_GET(conf, field, dflt) ((conf)->field == AG_UNSET ? (dflt) : (conf)->field)
/* The child scope wins where it set a value. */
#define AG_MERGE(merged, base, add, field) \
    (merged)->field = ((add)->field == AG_UNSET) ? (base)->field : (add)->field

void* ag_dir_config_create(apr_pool_t* p, char* dir) {
    ag_dir_config* conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->enabled = AG_UNSET;
    conf->half_close = AG_UNSET;
    conf->mark_conn = AG_UNSET;
    conf->cleanup_warn_ns = AG_UNSET;
    conf->lock_warn_ns = AG_UNSET;
    conf->proxy = AG_UNSET;
    conf->log_status = AG_UNSET;
    conf->ka_idle_s = AG_UNSET;
    conf->ka_interval_s = AG_UNSET;
    conf->ka_count = AG_UNSET;
    conf->stop_aborts = AG_UNSET;
    conf->skip_abandoned = AG_UNSET;
    conf->grace_ns = AG_UNSET;
    conf->grace_action = AG_UNSET;
    conf->exit_timeout_ns = AG_UNSET;
    conf->monitor_boost = AG_UNSET;
    conf->terminate_interval_ns = AG_UNSET;
    return conf;
}

void* ag_dir_config_merge(apr_pool_t* p, void* basev, void* addv) {
    const ag_dir_config *base = basev, *add = addv;
    ag_dir_config* merged = apr_pcalloc(p, sizeof(*merged));
    AG_MERGE(merged, base, add, enabled);
    AG_MERGE(merged, base, add, half_close);
    AG_MERGE(merged, base, add, mark_conn);
    AG_MERGE(merged, base, add, cleanup_warn_ns);
    AG_MERGE(merged, base, add, lock_warn_ns);
    AG_MERGE(merged, base, add, proxy);
    AG_MERGE(merged, base, add, log_status);
    /* AbortGuardKeepAlive sets its three fields together. */
    AG_MERGE(merged, base, add, ka_idle_s);
    AG_MERGE(merged, base, add, ka_interval_s);
    AG_MERGE(merged, base, add, ka_count);
    AG_MERGE(merged, base, add, stop_aborts);
    AG_MERGE(merged, base, add, skip_abandoned);
    AG_MERGE(merged, base, add, grace_ns);
    AG_MERGE(merged, base, add, grace_action);
    AG_MERGE(merged, base, add, exit_timeout_ns);
    AG_MERGE(merged, base, add, monitor_boost);
    AG_MERGE(merged, base, add, terminate_interval_ns);
    return merged;
}

const ag_dir_config* ag_config_for(const request_rec* r) {
    return ap_get_module_config(r->per_dir_config, &abortguard_module);
}

int ag_config_enabled(const ag_dir_config* conf) {
    return AG_GET(conf, enabled, 0);
}

int ag_config_forbidden(const ag_dir_config* conf) {
    return conf->enabled == 0;
}

apr_int64_t ag_config_cleanup_warn_ns(const ag_dir_config* conf) {
    return AG_GET(conf, cleanup_warn_ns, AG_DEFAULT_CLEANUP_WARN_NS);
}

apr_int64_t ag_config_lock_warn_ns(const ag_dir_config* conf) {
    return AG_GET(conf, lock_warn_ns, 0);
}

int ag_config_ignores_half_close(const ag_dir_config* conf) {
    return AG_GET(conf, half_close, AG_HALF_CLOSE_ABORT) == AG_HALF_CLOSE_IGNORE;
}

int ag_config_marks_connection(const ag_dir_config* conf) {
    return AG_GET(conf, mark_conn, 1);
}

int ag_config_proxy(const ag_dir_config* conf) {
    return AG_GET(conf, proxy, 1);
}

int ag_config_log_status(const ag_dir_config* conf) {
    return AG_GET(conf, log_status, 0);
}

int ag_config_keepalive(const ag_dir_config* conf, int* idle_s, int* interval_s, int* count) {
    if (AG_GET(conf, ka_idle_s, 0) == 0) {
        return 0;
    }
    *idle_s = conf->ka_idle_s;
    *interval_s = conf->ka_interval_s;
    *count = conf->ka_count;
    return 1;
}

int ag_config_skip_abandoned(const ag_dir_config* conf) {
    return AG_GET(conf, skip_abandoned, 1);
}

int ag_config_stop_aborts(const ag_dir_config* conf) {
    return AG_GET(conf, stop_aborts, 0);
}

const ag_dir_config* ag_config_for_server(const server_rec* s) {
    return ap_get_module_config(s->lookup_defaults, &abortguard_module);
}

apr_int64_t ag_config_grace_ns(const ag_dir_config* conf) {
    return AG_GET(conf, grace_ns, AG_DEFAULT_GRACE_NS);
}

int ag_config_grace_terminates(const ag_dir_config* conf) {
    return AG_GET(conf, grace_action, AG_GRACE_LOG) == AG_GRACE_TERMINATE;
}

apr_int64_t ag_config_exit_timeout_ns(const ag_dir_config* conf) {
    return AG_GET(conf, exit_timeout_ns, AG_DEFAULT_EXIT_TIMEOUT_NS);
}

apr_int64_t ag_config_terminate_interval_ns(const ag_dir_config* conf) {
    return AG_GET(conf, terminate_interval_ns, AG_DEFAULT_TERMINATE_INTERVAL_NS);
}

int ag_config_monitor_nice(const ag_dir_config* conf) {
    return -AG_GET(conf, monitor_boost, -AG_DEFAULT_MONITOR_NICE);
}

static const char* set_half_close(cmd_parms* cmd, void* dirconf, const char* arg) {
    ag_dir_config* conf = dirconf;
    (void)cmd;
    if (!strcasecmp(arg, "abort")) {
        conf->half_close = AG_HALF_CLOSE_ABORT;
    } else if (!strcasecmp(arg, "ignore")) {
        conf->half_close = AG_HALF_CLOSE_IGNORE;
    } else {
        return "AbortGuardHalfClose must be 'abort' or 'ignore'";
    }
    return NULL;
}

/* An On|Off directive; cmd->info is the offset of its int field. */
static const char* set_flag(cmd_parms* cmd, void* dirconf, int flag) {
    *(int*)((char*)dirconf + (apr_uintptr_t)cmd->info) = flag;
    return NULL;
}

#define AG_MS APR_INT64_C(1000000)
#define AG_SECOND (1000 * AG_MS)
#define AG_MINUTE (60 * AG_SECOND)

/* A duration directive: its field, its range, the range as the error
 * message says it, whether "off" (0s) is accepted, and whether it is
 * process-wide (main server config only: a child process has one
 * lifecycle, whichever virtual host its requests belong to). */
typedef struct {
    apr_size_t offset;
    apr_int64_t min_ns, max_ns;
    const char* range;
    int can_be_off;
    int global;
} ag_duration_rule;

static const ag_duration_rule cleanup_warn_rule = {
    APR_OFFSETOF(ag_dir_config, cleanup_warn_ns), AG_MS, 60 * AG_MINUTE, "from 1ms to 60m", 1, 0};
static const ag_duration_rule lock_warn_rule = {
    APR_OFFSETOF(ag_dir_config, lock_warn_ns), AG_MS, 60 * AG_MINUTE, "from 1ms to 60m", 1, 0};
/* A grace period shorter than a second would cut handlers that are still
 * noticing; a day covers the longest report. */
static const ag_duration_rule grace_rule = {APR_OFFSETOF(ag_dir_config, grace_ns),
                                            AG_SECOND,
                                            1440 * AG_MINUTE,
                                            "from 1s to 1440m (a day)",
                                            1,
                                            1};
/* The exit bound's SIGKILL backstop is armed a second after it. */
static const ag_duration_rule exit_rule = {APR_OFFSETOF(ag_dir_config, exit_timeout_ns),
                                           AG_SECOND,
                                           60 * AG_MINUTE,
                                           "from 1s to 60m",
                                           1,
                                           1};
/* Never off: it bounds how often clients can end a child. */
static const ag_duration_rule terminate_rule = {APR_OFFSETOF(ag_dir_config, terminate_interval_ns),
                                                AG_SECOND,
                                                60 * AG_MINUTE,
                                                "from 1s to 60m",
                                                0,
                                                1};

static int duration_ok(const ag_duration_rule* rule, const char* arg, int64_t* ns) {
    *ns = 0;
    if (rule->can_be_off && strcasecmp(arg, "off") == 0) {
        return 1;
    }
    if (!ag_parse_duration(arg, ns)) {
        return 0;
    }
    return (rule->can_be_off && *ns == 0) || (*ns >= rule->min_ns && *ns <= rule->max_ns);
}

static const char* set_duration(cmd_parms* cmd, void* dirconf, const char* arg) {
    const ag_duration_rule* rule = cmd->info;
    const char* err = rule->global ? ap_check_cmd_context(cmd, GLOBAL_ONLY) : NULL;
    int64_t ns;
    if (err != NULL) {
        return err;
    }
    if (!duration_ok(rule, arg, &ns)) {
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " takes a duration ", rule->range,
                           ": a whole number with the unit ms, s or m (e.g. 500ms, 2s, 1m)",
                           rule->can_be_off ? "; or off (0s)" : "", NULL);
    }
    *(apr_int64_t*)((char*)dirconf + rule->offset) = ns;
    return NULL;
}

static const char* set_log_status(cmd_parms* cmd, void* dirconf, const char* arg) {
    ag_dir_config* conf = dirconf;
    char* end;
    long code;
    (void)cmd;
    if (!strcasecmp(arg, "off")) {
        conf->log_status = 0;
        return NULL;
    }
    code = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || code < 100 || code > 999) {
        return "AbortGuardLogStatus takes a status code from 100 to 999 (e.g. 499) or Off";
    }
    conf->log_status = (int)code;
    return NULL;
}

/* Whole seconds from 1s to TCP_KEEPIDLE's maximum, 32767s. */
static int keepalive_seconds(const char* arg, int* out) {
    int64_t ns;
    if (!ag_parse_duration(arg, &ns) || ns % APR_INT64_C(1000000000) != 0) {
        return 0;
    }
    ns /= APR_INT64_C(1000000000);
    if (ns < 1 || ns > 32767) {
        return 0;
    }
    *out = (int)ns;
    return 1;
}

static const char* set_keepalive(cmd_parms* cmd, void* dirconf, const char* idle,
                                 const char* interval, const char* count) {
    static const char usage[] =
        "AbortGuardKeepAlive takes Off, or <idle> [<interval> [<count>]]: durations in whole "
        "seconds from 1s to 32767s (e.g. 10s, 1m) and a probe count from 1 to 127";
    ag_dir_config* conf = dirconf;
    int idle_s, interval_s, n = 3;
    char* end;
    (void)cmd;
    if (!strcasecmp(idle, "off") && interval == NULL) {
        conf->ka_idle_s = conf->ka_interval_s = conf->ka_count = 0;
        return NULL;
    }
    if (!keepalive_seconds(idle, &idle_s)) {
        return usage;
    }
    interval_s = idle_s;
    if (interval != NULL && !keepalive_seconds(interval, &interval_s)) {
        return usage;
    }
    if (count != NULL) {
        long v = strtol(count, &end, 10);
        if (*count == '\0' || *end != '\0' || v < 1 || v > 127) {
            return usage;
        }
        n = (int)v;
    }
    conf->ka_idle_s = idle_s;
    conf->ka_interval_s = interval_s;
    conf->ka_count = n;
    return NULL;
}

static const char* set_grace_action(cmd_parms* cmd, void* dirconf, const char* arg) {
    ag_dir_config* conf = dirconf;
    const char* err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err != NULL) {
        return err;
    }
    if (!strcasecmp(arg, "log")) {
        conf->grace_action = AG_GRACE_LOG;
    } else if (!strcasecmp(arg, "terminate")) {
        conf->grace_action = AG_GRACE_TERMINATE;
    } else {
        return "AbortGuardGraceAction must be 'log' or 'terminate'";
    }
    return NULL;
}

/* Stored negated: AG_UNSET (-1) is a valid nice value. */
static const char* set_monitor_nice(cmd_parms* cmd, void* dirconf, const char* arg) {
    ag_dir_config* conf = dirconf;
    const char* err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char* end;
    long v;
    if (err != NULL) {
        return err;
    }
    v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || v < -20 || v > 0) {
        return "AbortGuardMonitorNice takes a nice value from -20 (highest priority) to 0 "
               "(as the request threads)";
    }
    conf->monitor_boost = (int)-v;
    return NULL;
}

/* httpd itself rejects a FLAG value other than On/Off with
 * "<Directive> must be On or Off". */
#define AG_SCOPES (RSRC_CONF | ACCESS_CONF | OR_FILEINFO)

const command_rec ag_directives[] = {
    AP_INIT_FLAG("AbortGuard", set_flag, (void*)APR_OFFSETOF(ag_dir_config, enabled), AG_SCOPES,
                 "On to watch the client connection of requests in this scope (default Off)"),
    AP_INIT_TAKE1("AbortGuardHalfClose", set_half_close, NULL, AG_SCOPES,
                  "abort (default): a client FIN aborts the request; ignore: only RST and "
                  "errors do"),
    AP_INIT_FLAG("AbortGuardMarkConnection", set_flag,
                 (void*)APR_OFFSETOF(ag_dir_config, mark_conn), AG_SCOPES,
                 "On (default) to set the connection's aborted flag when the client leaves"),
    AP_INIT_TAKE1("AbortGuardCleanupWarn", set_duration, (void*)&cleanup_warn_rule, AG_SCOPES,
                  "log a cleanup that runs longer than this at warn (default 1s; off: never)"),
    AP_INIT_TAKE1("AbortGuardLockWarn", set_duration, (void*)&lock_warn_rule, AG_SCOPES,
                  "log a lock held longer than this at warn (default off)"),
    AP_INIT_FLAG("AbortGuardProxy", set_flag, (void*)APR_OFFSETOF(ag_dir_config, proxy), AG_SCOPES,
                 "On (default) to shut a proxied request's backend connection down when its "
                 "client leaves"),
    AP_INIT_TAKE1("AbortGuardLogStatus", set_log_status, NULL, AG_SCOPES,
                  "a status (e.g. 499) to log in %>s for an aborted request, or Off (default)"),
    AP_INIT_TAKE123("AbortGuardKeepAlive", set_keepalive, NULL, AG_SCOPES,
                    "<idle> [<interval> [<count>]]: TCP keepalive on monitored requests' "
                    "client sockets, or Off (default)"),
    AP_INIT_FLAG("AbortGuardStopAborts", set_flag, (void*)APR_OFFSETOF(ag_dir_config, stop_aborts),
                 AG_SCOPES,
                 "On to treat the child's stop notice as a client abort (reason server-stop); "
                 "default Off"),
    AP_INIT_FLAG("AbortGuardSkipAbandoned", set_flag,
                 (void*)APR_OFFSETOF(ag_dir_config, skip_abandoned), AG_SCOPES,
                 "On (default) not to hand a request to its handler when its client already left "
                 "(while it waited for a worker)"),
    AP_INIT_TAKE1("AbortGuardGracePeriod", set_duration, (void*)&grace_rule, RSRC_CONF,
                  "how long a handler may run on after its client left before the grace action "
                  "(default 30s; off: never)"),
    AP_INIT_TAKE1("AbortGuardGraceAction", set_grace_action, NULL, RSRC_CONF,
                  "log (default): log a handler still running after the grace period; terminate: "
                  "also run its abort cleanups, release its locks and end the child process"),
    AP_INIT_TAKE1("AbortGuardExitTimeout", set_duration, (void*)&exit_rule, RSRC_CONF,
                  "how long an exiting child may take before it logs what it waits for and exits "
                  "(default 5s; off: no bound)"),
    AP_INIT_TAKE1("AbortGuardTerminateInterval", set_duration, (void*)&terminate_rule, RSRC_CONF,
                  "at most one AbortGuardGraceAction terminate per this interval across the "
                  "server, and none in a child's first interval (default 10s)"),
    AP_INIT_TAKE1("AbortGuardMonitorNice", set_monitor_nice, NULL, RSRC_CONF,
                  "the monitor thread's nice value, -20 (default) to 0: it runs before the "
                  "request threads it wakes"),
    {NULL}};
