#include "log.h"

#include <stdarg.h>
#include <stdio.h>

#include <atomic>

namespace abortguard {
namespace log {

namespace {

// The sink and its context are written once before threads start; the level
// may change later (tests), hence atomic.
Sink g_sink = nullptr;
void* g_ctx = nullptr;
std::atomic<int> g_max_level{-1};

}  // namespace

void set_sink(Sink sink, void* ctx, Level max_level) noexcept {
    g_sink = sink;
    g_ctx = ctx;
    g_max_level.store(sink ? static_cast<int>(max_level) : -1, std::memory_order_release);
}

bool enabled(Level level) noexcept {
    return static_cast<int>(level) <= g_max_level.load(std::memory_order_relaxed);
}

void write(Level level, const char* fmt, ...) noexcept {
    if (!enabled(level) || g_sink == nullptr)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_sink(level, buf, g_ctx);
}

}  // namespace log
}  // namespace abortguard
