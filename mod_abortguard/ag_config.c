/* All of mod_abortguard's directives, in one place. */
#include "ag_config.h"

#include <errno.h>
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

/* Every per-directory field: unset at creation, merged by scope.
 * AbortGuardKeepAlive sets its three ka_ fields together. */
// clang-format off
#define AG_DIR_FIELDS(X) \
    X(enabled) \
    X(half_close) \
    X(mark_conn) \
    X(cleanup_warn_ns) \
    X(lock_warn_ns) \
    X(proxy) \
    X(log_status) \
    X(ka_idle_s) \
    X(ka_interval_s) \
    X(ka_count) \
    X(stop_aborts) \
    X(skip_abandoned)
// clang-format on

void* ag_dir_config_create(apr_pool_t* p, char* dir) {
    ag_dir_config* conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
#define AG_SET_UNSET(field) conf->field = AG_UNSET;
    AG_DIR_FIELDS(AG_SET_UNSET)
#undef AG_SET_UNSET
    return conf;
}

void* ag_dir_config_merge(apr_pool_t* p, void* basev, void* addv) {
    const ag_dir_config *base = basev, *add = addv;
    ag_dir_config* merged = apr_pcalloc(p, sizeof(*merged));
#define AG_MERGE_FIELD(field) AG_MERGE(merged, base, add, field);
    AG_DIR_FIELDS(AG_MERGE_FIELD)
#undef AG_MERGE_FIELD
    return merged;
}

void* ag_server_config_create(apr_pool_t* p, server_rec* s) {
    ag_server_config* conf = apr_pcalloc(p, sizeof(*conf));
    (void)s;
    conf->grace_ns = AG_DEFAULT_GRACE_NS;
    conf->grace_action = AG_GRACE_LOG;
    conf->exit_timeout_ns = AG_DEFAULT_EXIT_TIMEOUT_NS;
    conf->monitor_nice = AG_DEFAULT_MONITOR_NICE;
    conf->terminate_interval_ns = AG_DEFAULT_TERMINATE_INTERVAL_NS;
    return conf;
}

const ag_dir_config* ag_config_for(const request_rec* r) {
    return ap_get_module_config(r->per_dir_config, &abortguard_module);
}

const ag_server_config* ag_config_for_server(const server_rec* s) {
    return ap_get_module_config(s->module_config, &abortguard_module);
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

/* Every setter below is table-driven: cmd->info holds the directive's rule,
 * whose `global` says which configuration it writes. A process-wide
 * directive is refused outside the main server's configuration with httpd's
 * own message naming the section. */
static const char* target_of(cmd_parms* cmd, void* dirconf, int global, char** target) {
    const char* err = global ? ap_check_cmd_context(cmd, GLOBAL_ONLY) : NULL;
    *target =
        global ? ap_get_module_config(cmd->server->module_config, &abortguard_module) : dirconf;
    return err;
}

/* On|Off: cmd->info is the offset of its int field (per directory only).
 * httpd itself rejects other values with "<Directive> must be On or Off". */
static const char* set_flag(cmd_parms* cmd, void* dirconf, int flag) {
    *(int*)((char*)dirconf + (apr_uintptr_t)cmd->info) = flag;
    return NULL;
}

/* One word of a fixed list, case-insensitive. */
typedef struct {
    const char* word;
    int value;
} ag_word;

typedef struct {
    apr_size_t offset;
    int global;
    const ag_word* words; /* ends with a NULL word */
    const char* accepts;  /* the list as the error message says it */
} ag_word_rule;

static const ag_word half_close_words[] = {
    {"abort", AG_HALF_CLOSE_ABORT}, {"ignore", AG_HALF_CLOSE_IGNORE}, {NULL, 0}};
static const ag_word_rule half_close_rule = {APR_OFFSETOF(ag_dir_config, half_close), 0,
                                             half_close_words, "'abort' or 'ignore'"};
static const ag_word grace_action_words[] = {
    {"log", AG_GRACE_LOG}, {"terminate", AG_GRACE_TERMINATE}, {NULL, 0}};
static const ag_word_rule grace_action_rule = {APR_OFFSETOF(ag_server_config, grace_action), 1,
                                               grace_action_words, "'log' or 'terminate'"};

static const char* set_word(cmd_parms* cmd, void* dirconf, const char* arg) {
    const ag_word_rule* rule = cmd->info;
    char* target;
    const char* err = target_of(cmd, dirconf, rule->global, &target);
    const ag_word* w;
    if (err != NULL) {
        return err;
    }
    for (w = rule->words; w->word != NULL; ++w) {
        if (strcasecmp(arg, w->word) == 0) {
            *(int*)(target + rule->offset) = w->value;
            return NULL;
        }
    }
    return apr_pstrcat(cmd->pool, cmd->cmd->name, " must be ", rule->accepts, NULL);
}

/* A whole decimal number from min to max, nothing after it. */
static int int_in_range(const char* arg, long min, long max, int* out) {
    char* end;
    long v;
    errno = 0;
    v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
        return 0;
    }
    *out = (int)v;
    return 1;
}

typedef struct {
    apr_size_t offset;
    int global;
    long min, max;
    int can_be_off; /* "off" stores 0 */
    const char* accepts;
} ag_int_rule;

static const ag_int_rule log_status_rule = {
    APR_OFFSETOF(ag_dir_config, log_status),          0, 100, 999, 1,
    "a status code from 100 to 999 (e.g. 499) or Off"};
static const ag_int_rule monitor_nice_rule = {
    APR_OFFSETOF(ag_server_config, monitor_nice),
    1,
    -20,
    0,
    0,
    "a nice value from -20 (highest priority) to 0 (as the request threads)"};

static const char* set_int(cmd_parms* cmd, void* dirconf, const char* arg) {
    const ag_int_rule* rule = cmd->info;
    char* target;
    const char* err = target_of(cmd, dirconf, rule->global, &target);
    int* field;
    if (err != NULL) {
        return err;
    }
    field = (int*)(target + rule->offset);
    if (rule->can_be_off && strcasecmp(arg, "off") == 0) {
        *field = 0;
    } else if (!int_in_range(arg, rule->min, rule->max, field)) {
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " takes ", rule->accepts, NULL);
    }
    return NULL;
}

#define AG_MS APR_INT64_C(1000000)
#define AG_SECOND (1000 * AG_MS)
#define AG_MINUTE (60 * AG_SECOND)

/* A duration: its field, its range (and the range as the error message says
 * it), and whether "off" (0s) is accepted. */
typedef struct {
    apr_size_t offset;
    int global;
    apr_int64_t min_ns, max_ns;
    const char* range;
    int can_be_off;
} ag_duration_rule;

static const ag_duration_rule cleanup_warn_rule = {
    APR_OFFSETOF(ag_dir_config, cleanup_warn_ns), 0, AG_MS, 60 * AG_MINUTE, "from 1ms to 60m", 1};
static const ag_duration_rule lock_warn_rule = {
    APR_OFFSETOF(ag_dir_config, lock_warn_ns), 0, AG_MS, 60 * AG_MINUTE, "from 1ms to 60m", 1};
/* A grace period shorter than a second would cut handlers that are still
 * noticing; a day covers the longest report. */
static const ag_duration_rule grace_rule = {APR_OFFSETOF(ag_server_config, grace_ns),
                                            1,
                                            AG_SECOND,
                                            1440 * AG_MINUTE,
                                            "from 1s to 1440m (a day)",
                                            1};
/* The exit bound's SIGKILL backstop is armed a second after it. */
static const ag_duration_rule exit_rule = {APR_OFFSETOF(ag_server_config, exit_timeout_ns),
                                           1,
                                           AG_SECOND,
                                           60 * AG_MINUTE,
                                           "from 1s to 60m",
                                           1};
/* Never off: it bounds how often clients can end a child. */
static const ag_duration_rule terminate_rule = {
    APR_OFFSETOF(ag_server_config, terminate_interval_ns),
    1,
    AG_SECOND,
    60 * AG_MINUTE,
    "from 1s to 60m",
    0};

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
    char* target;
    const char* err = target_of(cmd, dirconf, rule->global, &target);
    int64_t ns;
    if (err != NULL) {
        return err;
    }
    if (!duration_ok(rule, arg, &ns)) {
        return apr_pstrcat(cmd->pool, cmd->cmd->name, " takes a duration ", rule->range,
                           ": a whole number with the unit ms, s or m (e.g. 500ms, 2s, 1m)",
                           rule->can_be_off ? "; or off (0s)" : "", NULL);
    }
    *(apr_int64_t*)(target + rule->offset) = ns;
    return NULL;
}

/* Whole seconds from 1s to TCP_KEEPIDLE's maximum, 32767s. */
static int keepalive_seconds(const char* arg, int* out) {
    int64_t ns;
    if (!ag_parse_duration(arg, &ns) || ns % AG_SECOND != 0) {
        return 0;
    }
    ns /= AG_SECOND;
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
    if (count != NULL && !int_in_range(count, 1, 127, &n)) {
        return usage;
    }
    conf->ka_idle_s = idle_s;
    conf->ka_interval_s = interval_s;
    conf->ka_count = n;
    return NULL;
}

#define AG_SCOPES (RSRC_CONF | ACCESS_CONF | OR_FILEINFO)

const command_rec ag_directives[] = {
    AP_INIT_FLAG("AbortGuard", set_flag, (void*)APR_OFFSETOF(ag_dir_config, enabled), AG_SCOPES,
                 "On to watch the client connection of requests in this scope (default Off)"),
    AP_INIT_TAKE1("AbortGuardHalfClose", set_word, (void*)&half_close_rule, AG_SCOPES,
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
    AP_INIT_TAKE1("AbortGuardLogStatus", set_int, (void*)&log_status_rule, AG_SCOPES,
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
    AP_INIT_TAKE1("AbortGuardGraceAction", set_word, (void*)&grace_action_rule, RSRC_CONF,
                  "log (default): log a handler still running after the grace period; terminate: "
                  "also run its abort cleanups, release its locks and end the child process"),
    AP_INIT_TAKE1("AbortGuardExitTimeout", set_duration, (void*)&exit_rule, RSRC_CONF,
                  "how long an exiting child may take before it logs what it waits for and exits "
                  "(default 5s; off: no bound)"),
    AP_INIT_TAKE1("AbortGuardTerminateInterval", set_duration, (void*)&terminate_rule, RSRC_CONF,
                  "at most one AbortGuardGraceAction terminate per this interval across the "
                  "server, and none in a child's first interval (default 10s)"),
    AP_INIT_TAKE1("AbortGuardMonitorNice", set_int, (void*)&monitor_nice_rule, RSRC_CONF,
                  "the monitor thread's nice value, -20 (default) to 0: it runs before the "
                  "request threads it wakes"),
    {NULL}};
