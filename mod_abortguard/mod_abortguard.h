/* mod_abortguard: public interface for httpd admins' tools and module authors.
 *
 * The module notices the moment a client goes away while its request is being
 * handled and publishes the outcome to the access log through these request
 * environment variables (set in log_transaction, before mod_log_config runs):
 *
 *   ABORTGUARD_ABORTED  "1" when the client went away before the response
 *                       completed; unset otherwise (LogFormat %{...}e prints -)
 *   ABORTGUARD_REASON   "fin", "rst" or "write" (and "error", "timeout" for
 *                       socket errors the kernel reports)
 */
#ifndef MOD_ABORTGUARD_H
#define MOD_ABORTGUARD_H

#include "httpd.h"
#include "http_config.h"

#define ABORTGUARD_VERSION "0.1.0"

#define ABORTGUARD_ENV_ABORTED "ABORTGUARD_ABORTED"
#define ABORTGUARD_ENV_REASON "ABORTGUARD_REASON"

extern module AP_MODULE_DECLARE_DATA abortguard_module;

#endif /* MOD_ABORTGUARD_H */
