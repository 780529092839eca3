/* The `abortguard-status` handler and the mod_status section: gather a view
 * (counters of all children, in-flight requests of this child), then hand
 * it to the renderer the request asked for. */
#include "ag_status.h"

#include "apr_optional_hooks.h"
#include "apr_strings.h"
#include "ap_mpm.h"
#include "http_config.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_status.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_shm.h"
#include "ag_status_view.h"
#include "ag_trust.h"

typedef enum { AG_FORMAT_HTML, AG_FORMAT_AUTO, AG_FORMAT_JSON } ag_format_e;

/* ------------------------------------------------------------ in flight */

typedef struct {
    apr_array_header_t* into; /* room for AG_STATUS_MAX_INFLIGHT, made beforehand */
    uint64_t vhost;           /* 0: every virtual host */
    int total;
} inflight_copy;

/* The slot holding the newest request copied so far. */
static ag_inflight_info* newest(apr_array_header_t* a) {
    ag_inflight_info* all = (ag_inflight_info*)a->elts;
    int i, n = 0;
    for (i = 1; i < a->nelts; ++i) {
        if (all[i].start_ns > all[n].start_ns) {
            n = i;
        }
    }
    return &all[n];
}

/* Runs under the in-flight table's lock: a copy and nothing else -- no
 * allocation (the array has its room), at most one scan of the copy. */
static void copy_inflight(const ag_inflight_info* info, void* ctx) {
    inflight_copy* c = ctx;
    ag_inflight_info* slot;
    if (c->vhost != 0 && info->vhost != c->vhost) {
        return;
    }
    ++c->total;
    if (c->into->nelts < AG_STATUS_MAX_INFLIGHT) {
        slot = apr_array_push(c->into);
    } else if ((slot = newest(c->into))->start_ns <= info->start_ns) {
        return; /* the oldest are kept */
    }
    *slot = *info;
    slot->uri[sizeof(slot->uri) - 1] = '\0';
    slot->handler[sizeof(slot->handler) - 1] = '\0';
}

static int older_first(const void* a, const void* b) {
    const ag_inflight_info *x = a, *y = b;
    return x->start_ns < y->start_ns ? -1 : x->start_ns > y->start_ns;
}

static void gather_inflight(ag_status_view* v, request_rec* r) {
    inflight_copy c;
    v->vhost_only = !ag_trust_from_config(r);
    c.into = apr_array_make(r->pool, AG_STATUS_MAX_INFLIGHT, sizeof(ag_inflight_info));
    c.vhost = v->vhost_only ? (uint64_t)(apr_uintptr_t)r->server : 0;
    c.total = 0;
    ag_inflight_foreach(copy_inflight, &c);
    qsort(c.into->elts, (size_t)c.into->nelts, sizeof(ag_inflight_info), older_first);
    v->flight = c.into;
    v->inflight_total = c.total;
}

ag_status_view* ag_status_view_gather(request_rec* r) {
    ag_status_view* v = apr_pcalloc(r->pool, sizeof(*v));
    void* block = ag_shm_block();

    v->have_counters = block != NULL;
    ag_stats_read(block, &v->stats);
    gather_inflight(v, r);
    v->now_ns = ag_now_ns();
    v->now = apr_time_now();
    v->pid = getpid();
    if (ap_mpm_query(AP_MPMQ_GENERATION, &v->generation) != APR_SUCCESS) {
        v->generation = 0;
    }
    return v;
}

/* --------------------------------------------------------------- hooks */

/* ?auto and ?json as mod_status reads its arguments: '&'-separated words. */
static ag_format_e requested_format(const request_rec* r) {
    char* args = r->args ? apr_pstrdup(r->pool, r->args) : NULL;
    char* state = NULL;
    char* word;
    ag_format_e format = AG_FORMAT_HTML;

    for (word = args ? apr_strtok(args, "&;", &state) : NULL; word != NULL;
         word = apr_strtok(NULL, "&;", &state)) {
        if (strcmp(word, "auto") == 0) {
            format = AG_FORMAT_AUTO;
        } else if (strcmp(word, "json") == 0) {
            format = AG_FORMAT_JSON;
        }
    }
    return format;
}

static int status_handler(request_rec* r) {
    ag_format_e format;
    ag_status_view* v;

    if (r->handler == NULL || strcmp(r->handler, AG_STATUS_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed |= (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    format = requested_format(r);
    ap_set_content_type(r, format == AG_FORMAT_JSON   ? "application/json"
                           : format == AG_FORMAT_AUTO ? "text/plain; charset=utf-8"
                                                      : "text/html; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        return OK;
    }
    v = ag_status_view_gather(r);
    if (format == AG_FORMAT_JSON) {
        ag_status_render_json(r, v);
    } else if (format == AG_FORMAT_AUTO) {
        ag_status_render_auto(r, v, "", 1);
    } else {
        ag_status_render_html(r, v);
    }
    return OK;
}

/* mod_status's server-status page, HTML or ?auto (AP_STATUS_SHORT). */
static int status_hook(request_rec* r, int flags) {
    ag_status_view* v = ag_status_view_gather(r);
    if (flags & AP_STATUS_SHORT) {
        ag_status_render_auto(r, v, "AbortGuard ", 0);
    } else {
        ag_status_render_section(r, v);
    }
    return OK;
}

void ag_status_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
