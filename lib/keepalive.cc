#include "keepalive.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "log.h"

namespace abortguard {

namespace {

template <typename T>
bool get(int fd, int level, int name, T* out) {
    socklen_t len = sizeof *out;
    return ::getsockopt(fd, level, name, out, &len) == 0;
}

template <typename T>
bool set(int fd, int level, int name, T value) {
    return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

}  // namespace

unsigned KeepaliveSettings::user_timeout_ms() const {
    const long long s = static_cast<long long>(idle_s) + static_cast<long long>(interval_s) * count;
    return s * 1000 > 0x7fffffff ? 0x7fffffffu : static_cast<unsigned>(s * 1000);
}

Status apply_keepalive(int fd, const KeepaliveSettings& s, KeepaliveSaved* saved) {
    KeepaliveSaved old;
    if (!get(fd, SOL_SOCKET, SO_KEEPALIVE, &old.keepalive) ||
        !get(fd, IPPROTO_TCP, TCP_KEEPIDLE, &old.idle_s) ||
        !get(fd, IPPROTO_TCP, TCP_KEEPINTVL, &old.interval_s) ||
        !get(fd, IPPROTO_TCP, TCP_KEEPCNT, &old.count) ||
        !get(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &old.user_timeout_ms)) {
        *saved = KeepaliveSaved{};
        return Status::from_errno(errno, "reading the socket's keepalive settings");
    }
    old.saved = true;
    if (!set(fd, IPPROTO_TCP, TCP_KEEPIDLE, s.idle_s) ||
        !set(fd, IPPROTO_TCP, TCP_KEEPINTVL, s.interval_s) ||
        !set(fd, IPPROTO_TCP, TCP_KEEPCNT, s.count) ||
        !set(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, s.user_timeout_ms()) ||
        !set(fd, SOL_SOCKET, SO_KEEPALIVE, 1)) {
        const int err = errno;
        restore_keepalive(fd, &old);
        *saved = KeepaliveSaved{};
        return Status::from_errno(err, "setting TCP keepalive");
    }
    *saved = old;
    return Status::ok();
}

void restore_keepalive(int fd, KeepaliveSaved* saved) noexcept {
    if (!saved->saved)
        return;
    // SO_KEEPALIVE first: with probing off, the timer values are inert.
    bool ok = set(fd, SOL_SOCKET, SO_KEEPALIVE, saved->keepalive) &&
              set(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, saved->user_timeout_ms) &&
              set(fd, IPPROTO_TCP, TCP_KEEPIDLE, saved->idle_s) &&
              set(fd, IPPROTO_TCP, TCP_KEEPINTVL, saved->interval_s) &&
              set(fd, IPPROTO_TCP, TCP_KEEPCNT, saved->count);
    if (!ok) {
        // The peer may be gone and the socket in error; nothing to fix then.
        AG_LOG(kDebug, "AG0109: restoring keepalive settings on socket %d failed: errno %d", fd,
               errno);
    }
    saved->saved = false;
}

}  // namespace abortguard
