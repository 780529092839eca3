/* The child process's lifecycle in httpd: the stop notice (the MPM's
 * child_stopping hook, and prefork's graceful signal, which reaches a child
 * long before its child_stopping), the client connections a synchronous MPM
 * keeps idle between two keep-alive requests, the grace period for handlers
 * that outlive their client and the bound on a child's exit. The logic is
 * lib/lifecycle.h's; this file connects httpd's hooks to it.
 *
 * Thread contract: register_hooks and child_init single-threaded; the hooks
 * run on the connection's or request's own thread; the stop notice may come
 * from a signal handler and only posts to the monitor thread. */
#ifndef AG_LIFECYCLE_H
#define AG_LIFECYCLE_H

#include "httpd.h"

#include "agcore.h"

void ag_lifecycle_register_hooks(apr_pool_t* p);

/* child_init, once the monitor runs. */
void ag_lifecycle_child_init(apr_pool_t* pchild, server_rec* s, ag_monitor* monitor);

/* The monitor's child-exit cleanup asks: nonzero if the monitor thread must
 * keep running as the exit watchdog (AbortGuardExitTimeout) instead of being
 * joined. Async-signal-safe. */
int ag_lifecycle_keeps_monitor(void);

/* What every request's state reports to (the stop notice, the grace
 * timer); NULL when the child has no lifecycle. Any thread, after
 * child_init. */
ag_lifecycle* ag_lifecycle_observer(void);

/* A terminate began this child's drain (it takes no new work). Any thread. */
int ag_lifecycle_draining_now(void);
/* This child's exit has begun; under prefork the request teardowns that
 * follow may run inside a signal handler. Async-signal-safe. */
int ag_lifecycle_exiting_now(void);

#endif /* AG_LIFECYCLE_H */
