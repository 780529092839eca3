// Logging from the core through a sink that the embedding program installs.
//
// The core never writes to stderr or files itself: httpd's glue installs a
// sink that forwards to ap_log_error, the tests install one that records.
// Formatting only happens when the level is enabled, so a disabled debug line
// on a hot path costs one relaxed atomic load.
//
// Messages carry a stable tag of ours ("AGnnnn: ...", one per message, listed
// in README.md's Message tags table) so admins can grep for them across
// releases.
//
// Thread contract: set_sink() is called before any other thread logs (httpd:
// post_config/child_init); enabled()/write() may then be called from any
// thread, including the monitor thread. The sink itself must be thread-safe.
#ifndef ABORTGUARD_LOG_H
#define ABORTGUARD_LOG_H

namespace abortguard {
namespace log {

enum class Level { kError = 0, kWarn, kNotice, kInfo, kDebug, kTrace };

using Sink = void (*)(Level level, const char* message, void* ctx);

// Installs `sink` (nullptr: discard everything) and the most verbose level
// it wants to receive.
void set_sink(Sink sink, void* ctx, Level max_level) noexcept;

bool enabled(Level level) noexcept;

// printf-style; truncates past 1 KiB. Never throws, never allocates.
void write(Level level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

}  // namespace log
}  // namespace abortguard

// Formats only when `level` is enabled.
#define AG_LOG(level, ...)                                                          \
    do {                                                                            \
        if (::abortguard::log::enabled(::abortguard::log::Level::level))            \
            ::abortguard::log::write(::abortguard::log::Level::level, __VA_ARGS__); \
    } while (0)

#endif  // ABORTGUARD_LOG_H
