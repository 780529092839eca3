/* The trusted SetHandler expressions (ag_trust.h): those of every section of
 * every server's configuration, nested <Files> and <If> included. */
#include "ag_trust.h"

#include "apr_hash.h"
#include "http_config.h"
#include "http_core.h"

static apr_hash_t* trusted_handlers; /* ap_expr_info_t* -> itself; read-only in children */

static void collect_sections(apr_array_header_t* sections);

static void collect_dir(ap_conf_vector_t* v) {
    core_dir_config* d = v != NULL ? ap_get_core_module_config(v) : NULL;
    if (d == NULL) {
        return;
    }
    if (d->expr_handler != NULL) {
        apr_hash_set(trusted_handlers, &d->expr_handler, sizeof(d->expr_handler), d);
    }
    collect_sections(d->sec_file);
    collect_sections(d->sec_if);
}

static void collect_sections(apr_array_header_t* sections) {
    int i;
    for (i = 0; sections != NULL && i < sections->nelts; ++i) {
        collect_dir(APR_ARRAY_IDX(sections, i, ap_conf_vector_t*));
    }
}

static int collect_trusted(apr_pool_t* pconf, apr_pool_t* plog, apr_pool_t* ptemp, server_rec* s) {
    trusted_handlers = apr_hash_make(pconf);
    for (; s != NULL; s = s->next) {
        core_server_config* sc = ap_get_core_module_config(s->module_config);
        collect_dir(s->lookup_defaults);
        collect_sections(sc->sec_dir);
        collect_sections(sc->sec_url);
    }
    return OK;
}

int ag_trust_from_config(const request_rec* r) {
    core_dir_config* d = ap_get_core_module_config(r->per_dir_config);
    return d != NULL && d->expr_handler != NULL && trusted_handlers != NULL &&
           apr_hash_get(trusted_handlers, &d->expr_handler, sizeof(d->expr_handler)) != NULL;
}

void ag_trust_register_hooks(apr_pool_t* p) {
    (void)p;
    ap_hook_post_config(collect_trusted, NULL, NULL, APR_HOOK_MIDDLE);
}
