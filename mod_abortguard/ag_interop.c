/* HTTP/2 streams, TCP keepalive and the logged status of aborted requests
 * (see ag_interop.h). */
#include "ag_interop.h"

#include "http_log.h"
#include "http_request.h"

#include "mod_abortguard.h"

APLOG_USE_MODULE(abortguard);

/* The flag watch aborts the token; c2->aborted is already set (mod_http2
 * set it), so there is nothing to mark: no callback. */
int ag_stream_watch(ag_monitor* m, conn_rec* c2, ag_state* state, ag_watch_id* id) {
    return ag_monitor_watch_flag(m, &c2->aborted, AG_REASON_H2_RESET, state, NULL, NULL, id);
}

void ag_stream_unwatch(ag_monitor* m, ag_watch_id id) {
    ag_monitor_unwatch_flag(m, id);
}

void ag_keepalive_start(request_rec* r, const ag_dir_config* conf, int fd,
                        ag_keepalive_saved* saved) {
    int idle_s, interval_s, count, rv;
    saved->saved = 0;
    if (!ag_config_keepalive(conf, &idle_s, &interval_s, &count)) {
        return;
    }
    rv = ag_keepalive_apply(fd, idle_s, interval_s, count, saved);
    if (rv != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r,
                      "AG0206: cannot set TCP keepalive on the client socket; a vanished client "
                      "will not be noticed for this request");
    }
}

void ag_keepalive_stop(int fd, ag_keepalive_saved* saved) {
    ag_keepalive_restore(fd, saved);
}

/* Every abort the module records means the response did not complete: the
 * monitor stops watching when the response's EOS leaves the handler, and a
 * failed write (reason "write") means bytes did not reach the client. */
void ag_log_status(request_rec* last) {
    int status = ag_config_log_status(ag_config_for(last));
    if (status != 0) {
        last->status = status;
    }
}
