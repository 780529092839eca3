/* The child process's side of the core: the log sink that carries the
 * core's messages into httpd's error log, and the monitor thread every
 * watch of this child is made with. The one owner of the monitor handle.
 *
 * Thread contract: the handle is set during the child's start-up, before
 * any request thread exists, and never cleared (the monitor's memory
 * outlives every request of the child); ag_child_monitor() may be called
 * from any thread after that. */
#ifndef AG_CHILD_H
#define AG_CHILD_H

#include "httpd.h"

#include "agcore.h"

/* From the module's register_hooks. */
void ag_child_register_hooks(apr_pool_t* p);

/* This child's monitor; NULL when it could not start (or before
 * child_init). */
ag_monitor* ag_child_monitor(void);

#endif /* AG_CHILD_H */
