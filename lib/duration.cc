#include "duration.h"

#include <cstring>

namespace abortguard {

namespace {

struct Unit {
    const char* suffix;
    int64_t ns;
};
// "ms" before "m": the longest suffix that matches wins.
constexpr Unit kUnits[] = {{"ms", 1000000}, {"s", 1000000000}, {"m", 60 * int64_t{1000000000}}};

}  // namespace

bool parse_duration(const char* text, int64_t* ns) noexcept {
    if (text == nullptr || *text < '0' || *text > '9')
        return false;
    int64_t value = 0;
    const char* p = text;
    for (; *p >= '0' && *p <= '9'; ++p) {
        if (value > (INT64_MAX - 9) / 10)
            return false;
        value = value * 10 + (*p - '0');
    }
    for (const Unit& u : kUnits) {
        if (std::strcmp(p, u.suffix) == 0) {
            if (value > INT64_MAX / u.ns)
                return false;
            *ns = value * u.ns;
            return true;
        }
    }
    return false;
}

}  // namespace abortguard
