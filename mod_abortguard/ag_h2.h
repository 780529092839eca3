/* HTTP/2 streams: a stream's client leaves by resetting it (or by closing
 * the connection all its streams share), which mod_http2 records in the
 * stream's secondary connection (c2->aborted) on the client connection's
 * thread (c1). This file watches that flag and tells the monitor when c1
 * has processed the client's frames, so the reset is seen at once rather
 * than by the monitor's slow poll.
 *
 * Thread contract: register_hooks single-threaded; c1's filter and hooks on
 * c1's thread; the watch calls on the stream's request thread. */
#ifndef AG_H2_H
#define AG_H2_H

#include "httpd.h"

#include "agcore.h"

/* The c1 input filter and connection hooks; from the module's
 * register_hooks. */
void ag_h2_register_hooks(apr_pool_t* p);

/* Aborts `state` with reason h2-reset once `c2` (a stream's secondary
 * connection) is marked aborted. Returns 0 or an errno (no monitor: ENOENT);
 * *id is 0 unless watched. */
int ag_h2_watch_stream(conn_rec* c2, ag_state* state, ag_watch_id* id);
/* Synchronous: once it returns, the monitor no longer reads c2. Harmless
 * with id 0. */
void ag_h2_unwatch_stream(ag_watch_id id);

#endif /* AG_H2_H */
