#include "status.h"

#include <string.h>

namespace abortguard {

std::string Status::to_string() const {
    if (code_ == 0)
        return "OK";
    if (code_ < 0)
        return what_;
    char buf[128];
    // GNU strerror_r: returns a pointer that may or may not be buf.
    const char* msg = strerror_r(code_, buf, sizeof buf);
    return what_ + ": " + msg;
}

}  // namespace abortguard
