/* AbortGuardProxy: when the client of a proxied request leaves, shut the
 * backend connection down, so the backend sees the close at once (its
 * request is cancelled) and mod_proxy stops waiting for a response nobody
 * will read.
 *
 * Where: mod_proxy's optional hook create_req(r, rp) runs on the request's
 * thread right before mod_proxy_http (or mod_proxy_uwsgi) reads the
 * backend's status line, for new and reused backend connections alike;
 * rp->connection is the backend connection. We arm the request's
 * UpstreamCut (lib/upstream_cut.h) with its socket. mod_proxy destroys
 * rp->pool first thing when it releases the backend connection (before the
 * socket is closed or pooled for reuse): a pre-cleanup there disarms,
 * synchronously, so the socket is never touched once it may be someone
 * else's.
 *
 * Side effects we take care of:
 * - Reuse: a connection we cut is marked AP_CONN_CLOSE before mod_proxy
 *   decides whether to pool it, so it is closed, never reused.
 * - Logs: mod_proxy_http logs a backend that closes before or while it
 *   answers at level error (AH01102 "error reading status line", AH01110,
 *   AH00898). For a cut we made those lines are false alarms, so the
 *   request gets its own copy of its log configuration (r->log) and, just
 *   before the cut, the abort lowers the proxy modules' levels in that copy
 *   to crit (single-byte atomic stores). Our own debug line AG0501 says
 *   what happened.
 * - Balancer: on a keep-alive client connection mod_proxy_http answers a
 *   backend that closed before the status line of a fresh backend
 *   connection with 500, which marks a balancer member in error. The abort
 *   sets the client connection's keepalive count to 0 first (it is closing
 *   anyway), which makes that path a plain 502 for this request: no member
 *   goes into error state, nothing is retried.
 *
 * Thread contract: hooks and cleanups on the request's thread; before_cut()
 * on the aborting thread (the monitor's), under the UpstreamCut's lock,
 * touching only the log copy and the client conn_rec's keepalive count,
 * both of which live as long as the request. */
#include "ag_proxy.h"

#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"

#include "mod_proxy.h"

#include "ag_request.h"
#include "ag_private.h"

/* The level the proxy modules' complaints are lowered to: below error and
 * warn (notices are always written; debug lines go too). */
#define AG_PROXY_QUIET_LEVEL APLOG_CRIT

/* Set in post_config (single-threaded), read-only in children. */
static int log_slots;      /* module_levels entries in a copy */
static int* proxy_modules; /* indexes of the loaded mod_proxy* modules */
static int n_proxy_modules;

typedef struct {
    ag_state* state;
    uint64_t id;              /* the arm; 0 when arming failed */
    request_rec* r;           /* the request mod_proxy serves */
    conn_rec* client;         /* r->connection */
    request_rec* rp;          /* the backend's response "request" */
    struct ap_logconf* log;   /* r->log and rp->log from now on */
    apr_pool_t* backend_pool; /* rp->pool while its cleanup is registered */
} ag_proxy_link;

/* The request's log configuration, copied with one entry per module, in
 * `p` (which outlives r). */
static struct ap_logconf* log_copy(const request_rec* r, apr_pool_t* p) {
    const struct ap_logconf* orig = r->log               ? r->log
                                    : r->connection->log ? r->connection->log
                                                         : &r->server->log;
    struct ap_logconf* copy = apr_palloc(p, sizeof(*copy));
    int i;
    copy->level = orig->level;
    copy->module_levels = apr_palloc(p, log_slots > 0 ? log_slots : 1);
    for (i = 0; i < log_slots; ++i) {
        copy->module_levels[i] = orig->module_levels ? orig->module_levels[i] : -1;
    }
    return copy;
}

/* The aborting thread, under the cut's lock, right before shutdown(). */
static void before_cut(void* arg) {
    ag_proxy_link* link = arg;
    int i;
    for (i = 0; i < n_proxy_modules; ++i) {
        signed char* level = &link->log->module_levels[proxy_modules[i]];
        int now = *level < 0 ? link->log->level : *level;
        if (now > AG_PROXY_QUIET_LEVEL) {
            __atomic_store_n(level, (signed char)AG_PROXY_QUIET_LEVEL, __ATOMIC_RELAXED);
        }
    }
    __atomic_store_n(&link->client->keepalives, 0, __ATOMIC_RELAXED);
}

/* rp->pool's pre-cleanup: mod_proxy releases the backend connection; the
 * socket is still open and not yet pooled. */
static apr_status_t backend_released(void* data) {
    ag_proxy_link* link = data;
    link->backend_pool = NULL;
    if (ag_state_disarm_upstream(link->state, link->id)) {
        link->rp->connection->keepalive = AP_CONN_CLOSE;
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, link->r,
                      "AG0501: the client went away; the backend connection was shut down "
                      "and is closed, not reused");
    }
    return APR_SUCCESS;
}

/* The request's pool goes first (it should not): stop using the backend
 * pool's cleanup, whose data lives in the request's pool. */
static apr_status_t request_ending(void* data) {
    ag_proxy_link* link = data;
    if (link->backend_pool != NULL) {
        ag_state_disarm_upstream(link->state, link->id);
        apr_pool_cleanup_kill(link->backend_pool, link, backend_released);
        link->backend_pool = NULL;
    }
    return APR_SUCCESS;
}

/* The client asked to switch protocols (Connection: Upgrade + Upgrade:), and
 * mod_proxy_http forwards such a request only where the worker allows the
 * upgrade (upgrade=, ws://, wss://): when the backend agrees (101),
 * mod_proxy_http answers the client through the connection's own filters,
 * past every hook, and runs the tunnel right away. So the request is
 * watched as a tunnel from the moment it goes to the backend; if the
 * backend refuses the upgrade, that one response is watched as a tunnel
 * too (a half-close is not an abort; RST and errors are). */
static int asks_upgrade(const request_rec* r) {
    const char* connection = apr_table_get(r->headers_in, "Connection");
    return apr_table_get(r->headers_in, "Upgrade") != NULL && connection != NULL &&
           ap_find_token(r->pool, connection, "upgrade");
}

static int proxy_create_req(request_rec* r, request_rec* rp) {
    ag_request_ctx* ctx = ag_request_ctx_get(r, 0, NULL);
    request_rec* owner;
    ag_proxy_link* link;
    apr_socket_t* sock;
    apr_os_sock_t fd;
    int rv;

    if (ctx != NULL && ag_request_live(ctx) && asks_upgrade(r)) {
        ag_request_enter_tunnel(ctx); /* whether or not the backend is cut */
    }
    if (ctx == NULL || !ag_request_live(ctx) || ag_config_forbidden(ag_request_config(ctx)) ||
        !ag_config_proxy(ag_config_for(r)) || rp->connection == NULL ||
        (sock = ap_get_conn_socket(rp->connection)) == NULL ||
        apr_os_sock_get(&fd, sock) != APR_SUCCESS) {
        return OK;
    }
    owner = ag_request_owner(ctx);
    link = apr_pcalloc(owner->pool, sizeof(*link));
    link->state = ag_request_state(ctx);
    link->r = r;
    link->client = r->connection;
    link->rp = rp;
    link->log = log_copy(r, owner->pool);
    /* Before arming: the cut may happen at once (the client already left). */
    r->log = link->log;
    rp->log = link->log;
    rv = ag_state_arm_upstream(link->state, fd, before_cut, link, &link->id);
    if (rv != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r,
                      "AG0502: cannot watch for the client leaving on behalf of the backend");
        return OK;
    }
    link->backend_pool = rp->pool;
    apr_pool_pre_cleanup_register(rp->pool, link, backend_released);
    apr_pool_pre_cleanup_register(owner->pool, link, request_ending);
    return OK;
}

static int post_config(apr_pool_t* pconf, apr_pool_t* plog, apr_pool_t* ptemp, server_rec* s) {
    module* m;
    int max = -1, n = 0;

    for (m = ap_top_module; m != NULL; m = m->next) {
        const char* name = ap_find_module_short_name(m->module_index);
        if (m->module_index > max) {
            max = m->module_index;
        }
        n += name != NULL && strncmp(name, "proxy", 5) == 0;
    }
    proxy_modules = apr_palloc(pconf, sizeof(int) * (n > 0 ? n : 1));
    n_proxy_modules = 0;
    for (m = ap_top_module; m != NULL; m = m->next) {
        const char* name = ap_find_module_short_name(m->module_index);
        if (name != NULL && strncmp(name, "proxy", 5) == 0) {
            proxy_modules[n_proxy_modules++] = m->module_index;
        }
    }
    log_slots = max + 1;
    return OK;
}

void ag_proxy_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(proxy, create_req, proxy_create_req, NULL, NULL, APR_HOOK_MIDDLE);
}
