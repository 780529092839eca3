#include "upstream_cut.h"

#include <errno.h>
#include <sys/socket.h>

#include "log.h"
#include "stats.h"

namespace abortguard {

Status UpstreamCut::arm(int fd, BeforeFn before, void* arg, ArmId* id) {
    if (!registered_) {
        if (!token_.on_abort([this](Reason) { cut(); }, "upstream cut"))
            return Status::from_errno(ENOMEM, "arming the upstream cut");
        registered_ = true;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        armed_ = next_++;
        fd_ = fd;
        before_ = before;
        arg_ = arg;
        done_ = false;
        *id = armed_;
    }
    // The client may have left before the upstream was there to tell; the
    // on_abort callback ran (or runs) with nothing armed then.
    if (token_.aborted())
        cut();
    return Status::ok();
}

bool UpstreamCut::disarm(ArmId id) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (id == 0 || id != armed_)
        return false;
    const bool was_cut = done_;
    armed_ = 0;
    fd_ = -1;
    before_ = nullptr;
    arg_ = nullptr;
    done_ = false;
    return was_cut;
}

void UpstreamCut::cut() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (armed_ == 0 || done_)
        return;
    if (before_ != nullptr)
        before_(arg_);
    if (::shutdown(fd_, SHUT_RDWR) != 0) {
        AG_LOG(kDebug, "AG0106: shutdown(upstream socket %d) failed: errno %d", fd_, errno);
    } else {
        stats::count(stats::Counter::kBackendCuts);
    }
    done_ = true;
}

}  // namespace abortguard
