/* Who set up a page: the server's own configuration files, or a tenant's
 * .htaccess. A page the admin set up (the status page, the metrics page)
 * may show every virtual host's data; one a tenant set up shows only what
 * names no other tenant's traffic.
 *
 * The difference is visible in the one thing that chose the handler:
 * core's SetHandler expression, parsed into pconf from the configuration
 * files and into the request's pool from .htaccess. The expressions of the
 * configuration files are collected once per configuration (post_config),
 * and a request is trusted when its SetHandler is one of them. A handler
 * chosen otherwise -- AddHandler, a module's own choice -- is not trusted.
 *
 * Thread contract: the hook runs in httpd's parent, before the children
 * fork; ag_trust_from_config() from any request thread afterwards (the set
 * is read-only in the children). */
#ifndef AG_TRUST_H
#define AG_TRUST_H

#include "httpd.h"

/* 1 when the configuration files chose `r`'s handler (SetHandler). */
int ag_trust_from_config(const request_rec* r);

/* Registers the post_config hook that collects the trusted expressions;
 * from the module's register_hooks. */
void ag_trust_register_hooks(apr_pool_t* p);

#endif /* AG_TRUST_H */
