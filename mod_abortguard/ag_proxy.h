/* AbortGuardProxy: the backend of a proxied request whose client left is
 * shut down at once (see ag_proxy.c for how, and what it takes care of).
 *
 * Thread contract: register_hooks single-threaded; the hooks run on the
 * request's thread; the cut itself on the aborting (monitor) thread. */
#ifndef AG_PROXY_H
#define AG_PROXY_H

#include "httpd.h"

/* mod_proxy's create_req optional hook; from the module's register_hooks. */
void ag_proxy_register_hooks(apr_pool_t* p);

#endif /* AG_PROXY_H */
