/* The `abortguard-status` handler and the mod_status section: gather a view
 * (counters of all children, in-flight requests of this child), then hand
 * it to the renderer the request asked for. */
#include "ag_status.h"

#include "apr_optional_hooks.h"
#include "apr_strings.h"
#include "ap_mpm.h"
#include "http_config.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_status.h"

#include <string.h>
#include <unistd.h>

#include "ag_shm.h"
#include "ag_status_view.h"

typedef enum { AG_FORMAT_HTML, AG_FORMAT_AUTO, AG_FORMAT_JSON } ag_format_e;

static const char* const counter_labels[AG_STAT_COUNT] = {
    "Requests monitored",      "Cleanups run", "Cleanups failed",     "Cleanups slow",
    "Locks released by abort", "Stop notices", "Grace period actions"};

const char* ag_status_counter_label(ag_stat_e which) {
    return (unsigned)which < AG_STAT_COUNT ? counter_labels[which] : "Unknown";
}

const char* ag_status_latency_label(ag_latency_e which) {
    return which == AG_LATENCY_DETECTION ? "Detection latency" : "Request to abort latency";
}

const char* ag_status_latency_meaning(ag_latency_e which) {
    return which == AG_LATENCY_DETECTION
               ? "from the kernel reporting the close to the request being marked aborted"
               : "from the start of the request to the abort being detected";
}

const char* ag_status_reason_name(int reason) {
    const char* name;
    if (reason == AG_STATS_REASONS - 1) {
        return "other";
    }
    if (reason <= AG_REASON_NONE || reason >= AG_STATS_REASONS) {
        return NULL;
    }
    name = ag_reason_name((ag_reason_e)reason);
    return strcmp(name, "unknown") == 0 ? NULL : name;
}

/* ------------------------------------------------------------ in flight */

/* Runs under the in-flight table's lock: a copy and nothing else. */
static void copy_inflight(const ag_inflight_info* info, void* ctx) {
    ag_inflight_info* slot = apr_array_push(ctx);
    *slot = *info;
    slot->uri[sizeof(slot->uri) - 1] = '\0';
    slot->handler[sizeof(slot->handler) - 1] = '\0';
}

static int gather_inflight(apr_array_header_t* into) {
    ag_inflight_foreach(copy_inflight, into);
    return 1;
}

ag_status_view* ag_status_view_gather(request_rec* r) {
    ag_status_view* v = apr_pcalloc(r->pool, sizeof(*v));
    void* block = ag_shm_block();

    v->have_counters = block != NULL;
    ag_stats_read(block, &v->stats);
    v->flight = apr_array_make(r->pool, 16, sizeof(ag_inflight_info));
    v->have_inflight = gather_inflight(v->flight);
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
    ag_shm_register_hooks();
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
