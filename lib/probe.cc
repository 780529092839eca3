#include "probe.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

namespace abortguard {

static_assert(POLLERR == 0x008 && POLLHUP == 0x010 && POLLRDHUP == 0x2000,
              "poll and epoll flags must agree");

Reason classify_socket_event(uint32_t events, int fd) noexcept {
    if (events & POLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            return Reason::kError;
        switch (err) {
            case ETIMEDOUT:
                return Reason::kTimeout;
            // 0: a reader on the request thread consumed ECONNRESET first.
            case 0:
            case ECONNRESET:
            case EPIPE:
                return Reason::kRst;
            default:
                return Reason::kError;
        }
    }
    // HUP: both directions are closed. We never shut down our side while a
    // request is watched, so the peer reset it (its error may already have
    // been consumed by a write on the request thread, hence no ERR).
    if (events & POLLHUP)
        return Reason::kRst;
    if (events & POLLRDHUP)
        return Reason::kFin;
    return Reason::kNone;
}

Reason classify_tunnel_event(uint32_t events, int fd) noexcept {
    if ((events & POLLERR) || !(events & POLLHUP))
        return classify_socket_event(events, fd);
    return Reason::kNone;
}

Reason probe_socket(int fd, bool ignore_half_close, bool tunnel) noexcept {
    struct pollfd p = {fd, static_cast<short>(ignore_half_close || tunnel ? 0 : POLLRDHUP), 0};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return Reason::kNone;
    const auto events = static_cast<uint32_t>(p.revents);
    return tunnel ? classify_tunnel_event(events, fd) : classify_socket_event(events, fd);
}

}  // namespace abortguard
