/* What every glue file shares: the module's symbol (defined in
 * mod_abortguard.c) and its log identity. Glue files include this rather
 * than the public header, which they include only for the public names they
 * implement.
 *
 * Thread contract: declarations only. */
#ifndef AG_PRIVATE_H
#define AG_PRIVATE_H

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

extern module AP_MODULE_DECLARE_DATA abortguard_module;

/* ap_log_*error from any glue file carries the module's per-module level. */
APLOG_USE_MODULE(abortguard);

#endif /* AG_PRIVATE_H */
