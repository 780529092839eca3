/* HTTP/2 streams (see ag_h2.h). */
#include "ag_h2.h"

#include "http_connection.h"
#include "http_request.h"

#include <errno.h>

#include "ag_child.h"
#include "ag_private.h"

/* mod_http2 sets a stream's c2->aborted on the client connection's thread
 * (c1) while it processes the client's frames: an RST_STREAM, a GOAWAY, the
 * connection's end. No hook says so. What we can see is c1 reading those
 * frames through its input filters: when c1 reads again, it has processed
 * what it read before, so that is when the flags are worth checking -- a
 * nudge to the monitor, which checks them at once. The same when the
 * connection ends. The monitor's slow poll is only the fallback. */

#define AG_H2_FILTER "ABORTGUARD_H2"

/* Written in register_hooks and post_config, read-only after. */
static ap_filter_rec_t* h2_filter;
static int h2_loaded;

/* c1's thread: `read_before` -- the previous read returned frames. */
static apr_status_t h2_c1_filter(ap_filter_t* f, apr_bucket_brigade* bb, ap_input_mode_t mode,
                                 apr_read_type_e block, apr_off_t readbytes) {
    int* read_before = f->ctx;
    ag_monitor* monitor = ag_child_monitor();
    apr_status_t rv;
    if (*read_before && monitor != NULL) {
        ag_monitor_nudge_flags(monitor); /* they have been processed by now */
    }
    rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
    *read_before = rv == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb);
    /* Frames (or the connection's end) that mod_http2 handles after this
     * read returns: a busy c1 may poll its streams' output before it reads
     * again, so the monitor also looks a few times over the next
     * milliseconds. Only while a stream's flag is watched. */
    if (monitor != NULL && (*read_before || (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)))) {
        ag_monitor_nudge_flags_soon(monitor);
    }
    return rv;
}

static int h2_pre_connection(conn_rec* c, void* csd) {
    (void)csd;
    if (h2_loaded && c->master == NULL && !c->outgoing) {
        ap_add_input_filter_handle(h2_filter, apr_pcalloc(c->pool, sizeof(int)), NULL, c);
    }
    return DECLINED;
}

/* mod_http2 has aborted the connection's streams by the time it is closed. */
static int h2_pre_close(conn_rec* c) {
    ag_monitor* monitor = ag_child_monitor();
    if (h2_loaded && c->master == NULL && monitor != NULL) {
        ag_monitor_nudge_flags(monitor);
    }
    return DECLINED;
}

static int h2_post_config(apr_pool_t* pconf, apr_pool_t* plog, apr_pool_t* ptemp, server_rec* s) {
    (void)pconf;
    (void)plog;
    (void)ptemp;
    (void)s;
    h2_loaded = ap_find_linked_module("mod_http2.c") != NULL;
    return OK;
}

void ag_h2_register_hooks(apr_pool_t* p) {
    (void)p;
    h2_filter = ap_register_input_filter(AG_H2_FILTER, h2_c1_filter, NULL, AP_FTYPE_CONNECTION);
    ap_hook_post_config(h2_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_connection(h2_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_close_connection(h2_pre_close, NULL, NULL, APR_HOOK_MIDDLE);
}

/* The flag watch aborts the token; c2->aborted is already set (mod_http2
 * set it), so there is nothing to mark: no callback. */
int ag_h2_watch_stream(conn_rec* c2, ag_state* state, ag_watch_id* id) {
    ag_monitor* monitor = ag_child_monitor();
    *id = 0;
    if (monitor == NULL) {
        return ENOENT;
    }
    return ag_monitor_watch_flag(monitor, &c2->aborted, AG_REASON_H2_RESET, state, NULL, NULL, id);
}

void ag_h2_unwatch_stream(ag_watch_id id) {
    if (id != 0) {
        ag_monitor_unwatch_flag(ag_child_monitor(), id);
    }
}
