/* mod_abortguard: notices the moment a client goes away while its request is
 * still being handled. This file is the module's skeleton: the module
 * record and the registration of every glue file's hooks. Each concern
 * lives in the file named after it (doc/ARCHITECTURE.md): the request's
 * watch in ag_request.c, the child's monitor thread in ag_child.c,
 * directives in ag_config.c. */
#include "ag_api.h"
#include "ag_child.h"
#include "ag_config.h"
#include "ag_h2.h"
#include "ag_lifecycle.h"
#include "ag_metrics.h"
#include "ag_private.h"
#include "ag_proxy.h"
#include "ag_request.h"
#include "ag_shm.h"
#include "ag_status.h"
#include "ag_trust.h"

static void register_hooks(apr_pool_t* p) {
    ag_api_register_hooks(p);
    ag_shm_register_hooks(p);
    ag_trust_register_hooks(p);
    ag_status_register_hooks(p);
    ag_metrics_register_hooks(p);
    ag_proxy_register_hooks(p);
    ag_h2_register_hooks(p);
    ag_lifecycle_register_hooks(p);
    ag_child_register_hooks(p);
    ag_request_register_hooks(p);
}

module AP_MODULE_DECLARE_DATA abortguard_module = {STANDARD20_MODULE_STUFF,
                                                   ag_dir_config_create,
                                                   ag_dir_config_merge,
                                                   ag_server_config_create,
                                                   NULL, /* process-wide: never merged */
                                                   ag_directives,
                                                   register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
                                                   AP_MODULE_FLAG_NONE
#endif
};
