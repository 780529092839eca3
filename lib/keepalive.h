// TCP keepalive for a monitored request: a client that vanished without a
// FIN or RST (cable pulled, NAT entry dropped) never makes its socket
// readable or errored, so the monitor cannot see it -- unless the kernel
// probes the peer. These functions switch keepalive probing (and a matching
// TCP_USER_TIMEOUT) on for one socket and put the previous settings back, so
// a keep-alive connection is not affected once its monitored request ends.
// When the probes go unanswered the kernel reports ETIMEDOUT, which the
// monitor classifies as Reason::kTimeout.
//
// Thread contract: free functions on a socket the caller owns; the owner
// applies and restores on its own thread.
#ifndef ABORTGUARD_KEEPALIVE_H
#define ABORTGUARD_KEEPALIVE_H

#include "status.h"

namespace abortguard {

struct KeepaliveSettings {
    int idle_s = 0;      // TCP_KEEPIDLE: quiet time before the first probe
    int interval_s = 0;  // TCP_KEEPINTVL: between probes
    int count = 0;       // TCP_KEEPCNT: unanswered probes before giving up
    // TCP_USER_TIMEOUT: idle + interval * count, so that unacknowledged
    // data (a response the peer never acknowledges) times out at the same
    // point as the probes do.
    unsigned user_timeout_ms() const;
};

// The socket's settings before apply(); `saved` is false if there was
// nothing to restore.
struct KeepaliveSaved {
    bool saved = false;
    int keepalive = 0;
    int idle_s = 0;
    int interval_s = 0;
    int count = 0;
    unsigned user_timeout_ms = 0;
};

// Remembers the current settings in `*saved`, then applies `s`. On failure
// whatever was changed is put back and `*saved` says nothing to restore.
Status apply_keepalive(int fd, const KeepaliveSettings& s, KeepaliveSaved* saved);

// Puts back what apply_keepalive() saved; harmless when nothing was saved.
void restore_keepalive(int fd, KeepaliveSaved* saved) noexcept;

}  // namespace abortguard

#endif  // ABORTGUARD_KEEPALIVE_H
