/* The public C API (mod_abortguard.h): the optional functions' bodies.
 *
 * Thread contract: each function's is in mod_abortguard.h; every one has a
 * defined outcome from any thread, at any time, with any argument. */
#ifndef AG_API_H
#define AG_API_H

#include "apr_pools.h"

/* Registers the optional functions; from the module's register_hooks. */
void ag_api_register_hooks(apr_pool_t* p);

#endif /* AG_API_H */
