/* Interop with the rest of httpd: HTTP/2 streams, TCP keepalive and the
 * logged status (ag_interop.c), and mod_proxy's backends (ag_proxy.c).
 * ag_request.c calls these at the points of a request's life it owns.
 *
 * Thread contract: the request's thread, except where a function says. */
#ifndef AG_INTEROP_H
#define AG_INTEROP_H

#include "httpd.h"

#include "ag_config.h"
#include "agcore.h"

/* Registers the HTTP/2 hooks and filter (register_hooks time). */
void ag_interop_register_hooks(apr_pool_t* p);
/* child_init: the monitor to nudge. */
void ag_h2_child_init(ag_monitor* m);

/* HTTP/2: `c2` is a stream's secondary connection; its `aborted` flag,
 * which mod_http2 sets on RST_STREAM and when the client's connection
 * closes, aborts `state` with reason h2-reset (checked on the monitor thread
 * when c1 has processed its client's frames; a slow poll is the fallback).
 * Returns 0 or an errno. */
int ag_stream_watch(ag_monitor* m, conn_rec* c2, ag_state* state, ag_watch_id* id);
void ag_stream_unwatch(ag_monitor* m, ag_watch_id id);

/* AbortGuardKeepAlive on the monitored request's client socket `fd`;
 * `saved` receives what to restore. Logs (info) and goes on without when the
 * socket refuses. */
void ag_keepalive_start(request_rec* r, const ag_dir_config* conf, int fd,
                        ag_keepalive_saved* saved);
/* Restores; harmless when nothing was applied. */
void ag_keepalive_stop(int fd, ag_keepalive_saved* saved);

/* AbortGuardLogStatus: `last` is the final request of an aborted request's
 * redirect chain, just before it is logged. */
void ag_log_status(request_rec* last);

/* mod_proxy: registers the proxy hooks (register_hooks time). */
void ag_proxy_register_hooks(apr_pool_t* p);

#endif /* AG_INTEROP_H */
