// extern "C" wrappers: every entry point catches everything (none of the
// wrapped calls is expected to throw, but httpd must never see one).
#include "agcore.h"

#include <errno.h>
#include <string.h>

#include <exception>
#include <memory>
#include <new>

#include "clock.h"
#include "duration.h"
#include "log.h"
#include "monitor.h"
#include "probe.h"
#include "registry.h"
#include "token.h"

using abortguard::Monitor;
using abortguard::Reason;
using abortguard::Token;

struct ag_monitor {
    std::unique_ptr<Monitor> impl;
};
struct ag_token {
    Token impl;
};
struct ag_registry {
    abortguard::CleanupRegistry impl;
};

namespace {

void copy_message(const std::string& msg, char* err, size_t errlen) {
    if (err == nullptr || errlen == 0)
        return;
    strncpy(err, msg.c_str(), errlen - 1);
    err[errlen - 1] = '\0';
}

struct SinkAdapter {
    ag_log_sink_fn* fn;
    void* ctx;
};
SinkAdapter g_sink;

void forward_log(abortguard::log::Level level, const char* message, void* ctx) {
    auto* s = static_cast<SinkAdapter*>(ctx);
    s->fn(static_cast<ag_log_level_e>(level), message, s->ctx);
}

}  // namespace

extern "C" {

void ag_log_set_sink(ag_log_sink_fn* sink, void* ctx, ag_log_level_e max_level) {
    g_sink = SinkAdapter{sink, ctx};
    abortguard::log::set_sink(sink ? forward_log : nullptr, &g_sink,
                              static_cast<abortguard::log::Level>(max_level));
}

const char* ag_reason_name(ag_reason_e reason) {
    return abortguard::reason_name(static_cast<Reason>(reason));
}

int64_t ag_now_ns(void) {
    return abortguard::mono_ns();
}

int ag_monitor_start(ag_monitor** out, char* err, size_t errlen) {
    try {
        auto m = std::make_unique<ag_monitor>();
        abortguard::Status st = Monitor::create(&m->impl);
        if (!st.is_ok()) {
            copy_message(st.to_string(), err, errlen);
            return st.code() > 0 ? st.code() : EIO;
        }
        *out = m.release();
        return 0;
    } catch (const std::exception& e) {
        copy_message(e.what(), err, errlen);
    } catch (...) {
        copy_message("unknown exception", err, errlen);
    }
    return ENOMEM;
}

int ag_monitor_stop(ag_monitor* m, unsigned bound_ms) {
    return m->impl->stop(int64_t{bound_ms} * 1000000) ? 1 : 0;
}

int ag_monitor_watch(ag_monitor* m, int fd, unsigned flags, ag_token* token, ag_abort_fn* fn,
                     void* arg, ag_watch_id* id) {
    try {
        unsigned f = 0;
        if (flags & AG_WATCH_IGNORE_HALF_CLOSE)
            f |= Monitor::kIgnoreHalfClose;
        abortguard::Status st = m->impl->watch(fd, f, &token->impl, fn, arg, id);
        return st.is_ok() ? 0 : (st.code() > 0 ? st.code() : EIO);
    } catch (...) {
        return ENOMEM;
    }
}

void ag_monitor_unwatch(ag_monitor* m, ag_watch_id id) {
    m->impl->unwatch(id);
}

ag_token* ag_token_create(void) {
    return new (std::nothrow) ag_token;
}

void ag_token_destroy(ag_token* t) {
    delete t;
}

int ag_token_aborted(const ag_token* t) {
    return t->impl.aborted() ? 1 : 0;
}

ag_reason_e ag_token_reason(const ag_token* t) {
    return static_cast<ag_reason_e>(t->impl.reason());
}

int64_t ag_token_aborted_at_ns(const ag_token* t) {
    return t->impl.aborted_at_ns();
}

int ag_token_abort(ag_token* t, ag_reason_e reason) {
    return t->impl.abort(static_cast<Reason>(reason), abortguard::mono_ns()) ? 1 : 0;
}

int ag_token_wait(const ag_token* t, int64_t timeout_ns) {
    return t->impl.wait_until(abortguard::mono_ns() + timeout_ns) ? 1 : 0;
}

int ag_token_on_abort(ag_token* t, ag_abort_fn* fn, void* arg) {
    try {
        auto cb = [fn, arg](Reason r) { fn(arg, static_cast<int>(r)); };
        return t->impl.on_abort(cb) ? 0 : ENOMEM;
    } catch (...) {
        return ENOMEM;
    }
}

ag_registry* ag_registry_create(void) {
    return new (std::nothrow) ag_registry;
}

void ag_registry_destroy(ag_registry* reg) {
    delete reg;
}

int ag_registry_add(ag_registry* reg, ag_cleanup_fn* fn, void* arg, int when,
                    const void* identity) {
    if (fn == nullptr || when < AG_WHEN_ON_ABORT || when > AG_WHEN_ALWAYS)
        return EINVAL;
    try {
        auto call = [fn, arg](bool aborted) { fn(arg, aborted ? 1 : 0); };
        if (reg->impl.add(call, static_cast<abortguard::When>(when), identity))
            return 0;
        return reg->impl.closed() ? ECANCELED : ENOMEM;
    } catch (...) {
        return ENOMEM;
    }
}

void ag_registry_run(ag_registry* reg, int aborted, int64_t slow_ns, ag_registry_summary* out) {
    const auto sum = reg->impl.run(aborted != 0, slow_ns);
    if (out != nullptr)
        *out = {sum.run, sum.failed, sum.slow, sum.total_ns, sum.slowest_ns};
}

int ag_probe_socket(int fd, int ignore_half_close) {
    return static_cast<int>(abortguard::probe_socket(fd, ignore_half_close != 0));
}

int ag_parse_duration(const char* text, int64_t* ns) {
    return abortguard::parse_duration(text, ns) ? 1 : 0;
}

}  // extern "C"
