/* The admin's view of the module: the `abortguard-status` handler (HTML,
 * ?auto in mod_status's "Key: value" style, ?json) and a section in
 * mod_status's server-status page, both fed from the shared counters
 * (ag_shm.h) and from the serving child's in-flight requests.
 *
 * Thread contract: hooks only; they run on request threads and read shared
 * state that is safe to read concurrently (atomic counters, a snapshot of
 * the in-flight table taken under its lock). */
#ifndef AG_STATUS_H
#define AG_STATUS_H

#include "httpd.h"

/* The handler name (a contract: `SetHandler abortguard-status`). */
#define AG_STATUS_HANDLER "abortguard-status"

/* Registers the handler and the mod_status hook; from the module's
 * register_hooks, which registers the shared memory's (ag_shm.h) and the
 * trust check's (ag_trust.h) hooks too. */
void ag_status_register_hooks(apr_pool_t* p);

#endif /* AG_STATUS_H */
