/* The `abortguard-metrics` handler. Set up in the server's configuration
 * files it shows everything; set up from .htaccess (ag_trust.h) only the
 * server-wide counters and histograms: the requests in flight and the
 * wasted work by handler describe other tenants' traffic. */
#include "ag_metrics.h"

#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include <errno.h>
#include <string.h>

#include "ag_shm.h"
#include "ag_trust.h"
#include "agmetrics.h"
#include "ag_private.h"

static void write_page(const char* text, size_t len, void* ctx) {
    ap_rwrite(text, (int)len, ctx);
}

static int metrics_handler(request_rec* r) {
    unsigned scope;
    int rv;

    if (r->handler == NULL || strcmp(r->handler, AG_METRICS_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed |= (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (ag_shm_block() == NULL) {
        /* No numbers rather than zeros that look like numbers (AG0701 said
         * why at the start). */
        return HTTP_SERVICE_UNAVAILABLE;
    }
    ap_set_content_type(r, AG_METRICS_CONTENT_TYPE);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        return OK;
    }
    scope = ag_trust_from_config(r) ? AG_METRICS_SERVER : AG_METRICS_COUNTERS_ONLY;
    rv = ag_metrics_render(ag_shm_block(), scope, write_page, r);
    if (rv != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, "AG0705: cannot format the metrics page");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

void ag_metrics_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_handler(metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
}
