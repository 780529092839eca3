#include "reason.h"

namespace abortguard {

const char* reason_name(Reason r) noexcept {
    switch (r) {
        case Reason::kNone:
            return "none";
        case Reason::kFin:
            return "fin";
        case Reason::kRst:
            return "rst";
        case Reason::kError:
            return "error";
        case Reason::kTimeout:
            return "timeout";
        case Reason::kH2Reset:
            return "h2-reset";
        case Reason::kServerStop:
            return "server-stop";
        case Reason::kWrite:
            return "write";
    }
    return "unknown";
}

}  // namespace abortguard
