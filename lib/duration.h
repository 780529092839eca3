// Durations as admins write them in directives: "250ms", "2s", "1m".
//
// Thread contract: a pure function; any thread.
#ifndef ABORTGUARD_DURATION_H
#define ABORTGUARD_DURATION_H

#include <cstdint>

namespace abortguard {

// Parses a whole number followed by one of the units ms, s or m (no space,
// nothing else) into nanoseconds. Returns false for anything else: no unit,
// another unit, a sign, a fraction, trailing text, or an overflow.
bool parse_duration(const char* text, int64_t* ns) noexcept;

}  // namespace abortguard

#endif  // ABORTGUARD_DURATION_H
