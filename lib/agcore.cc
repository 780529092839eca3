// extern "C" wrappers. Every entry point is noexcept (declared so in
// agcore.h, so a definition without it does not compile); those that call
// what may throw catch everything and return an errno value.
#include "agcore.h"

#include <errno.h>
#include <string.h>

#include <exception>
#include <memory>
#include <new>

#include "clock.h"
#include "duration.h"
#include "flag_watch.h"
#include "keepalive.h"
#include "lifecycle.h"
#include "log.h"
#include "monitor.h"
#include "probe.h"
#include "registry.h"
#include "request_state.h"

using abortguard::Monitor;
using abortguard::Reason;
using abortguard::RequestState;

// The C enums below are the C++ ones, cast across the boundary: a value
// added to one side and not the other must not compile.
#define AG_SAME(c_value, cxx_value) \
    static_assert(static_cast<int>(c_value) == static_cast<int>(cxx_value), #c_value)
AG_SAME(AG_REASON_NONE, Reason::kNone);
AG_SAME(AG_REASON_FIN, Reason::kFin);
AG_SAME(AG_REASON_RST, Reason::kRst);
AG_SAME(AG_REASON_ERROR, Reason::kError);
AG_SAME(AG_REASON_TIMEOUT, Reason::kTimeout);
AG_SAME(AG_REASON_WRITE, Reason::kWrite);
AG_SAME(AG_REASON_H2_RESET, Reason::kH2Reset);
AG_SAME(AG_REASON_SERVER_STOP, Reason::kServerStop);
AG_SAME(AG_LOG_ERROR, abortguard::log::Level::kError);
AG_SAME(AG_LOG_WARN, abortguard::log::Level::kWarn);
AG_SAME(AG_LOG_NOTICE, abortguard::log::Level::kNotice);
AG_SAME(AG_LOG_INFO, abortguard::log::Level::kInfo);
AG_SAME(AG_LOG_DEBUG, abortguard::log::Level::kDebug);
AG_SAME(AG_LOG_TRACE, abortguard::log::Level::kTrace);
AG_SAME(AG_WHEN_ON_ABORT, abortguard::CleanupWhen::kOnAbort);
AG_SAME(AG_WHEN_ON_SUCCESS, abortguard::CleanupWhen::kOnSuccess);
AG_SAME(AG_WHEN_ALWAYS, abortguard::CleanupWhen::kAlways);
AG_SAME(AG_STATE_STOP_ABORTS, RequestState::kStopAborts);
#undef AG_SAME

struct ag_monitor {
    std::unique_ptr<Monitor> impl;
    // Never destroyed before the process exits (nor is the monitor).
    std::unique_ptr<abortguard::FlagWatcher> flags;
};
struct ag_lifecycle {
    std::unique_ptr<abortguard::Lifecycle> impl;
};
struct ag_state {
    RequestState impl;
    ag_state(const char* uri, const char* handler, unsigned flags, uint64_t vhost,
             abortguard::RequestObserver* observer)
        : impl(uri, handler, flags, vhost, observer) {}
};

namespace {

void copy_message(const std::string& msg, char* err, size_t errlen) {
    if (err == nullptr || errlen == 0)
        return;
    snprintf(err, errlen, "%s", msg.c_str());
}

int errno_of(const abortguard::Status& st) {
    return st.code() > 0 ? st.code() : EIO;
}

int errno_or_zero(const abortguard::Status& st) {
    return st.is_ok() ? 0 : errno_of(st);
}

// Runs `create` (which returns a Status), turning a failure or an exception
// into an errno value and a message for the C caller.
template <class Create>
int create_reporting(char* err, size_t errlen, Create&& create) noexcept {
    try {
        const abortguard::Status st = create();
        if (st.is_ok())
            return 0;
        copy_message(st.to_string(), err, errlen);
        return errno_of(st);
    } catch (const std::exception& e) {
        copy_message(e.what(), err, errlen);
    } catch (...) {
        copy_message("unknown exception", err, errlen);
    }
    return ENOMEM;
}

// The C permit function has an int result; the config outlives the
// lifecycle (the glue keeps it in a static).
bool permit_thunk(void* arg, int64_t now_ns, int64_t interval_ns) {
    const auto* c = static_cast<const ag_lifecycle_config*>(arg);
    return c->permit(c->permit_arg, now_ns, interval_ns) != 0;
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

void ag_log_set_sink(ag_log_sink_fn* sink, void* ctx, ag_log_level_e max_level) noexcept {
    g_sink = SinkAdapter{sink, ctx};
    abortguard::log::set_sink(sink ? forward_log : nullptr, &g_sink,
                              static_cast<abortguard::log::Level>(max_level));
}

const char* ag_reason_name(ag_reason_e reason) noexcept {
    return abortguard::reason_name(static_cast<Reason>(reason));
}

int64_t ag_now_ns(void) noexcept {
    return abortguard::mono_ns();
}

int64_t ag_us_to_ns(int64_t us) noexcept {
    return abortguard::sat_mul(us, 1000);
}

int ag_on_monitor_thread(void) noexcept {
    return Monitor::on_a_monitor_thread() ? 1 : 0;
}

int ag_parse_duration(const char* text, int64_t* ns) noexcept {
    return abortguard::parse_duration(text, ns) ? 1 : 0;
}

int ag_monitor_start(ag_monitor** out, char* err, size_t errlen) noexcept {
    return create_reporting(err, errlen, [&] {
        auto m = std::make_unique<ag_monitor>();
        abortguard::Status st = Monitor::create(&m->impl);
        if (st.is_ok()) {
            m->flags = std::make_unique<abortguard::FlagWatcher>(*m->impl);
            *out = m.release();
        }
        return st;
    });
}

int ag_monitor_stop(ag_monitor* m, unsigned bound_ms) noexcept {
    return m->impl->stop(int64_t{bound_ms} * 1000000) ? 1 : 0;
}

int ag_monitor_watch(ag_monitor* m, int fd, unsigned flags, ag_state* state, ag_abort_fn* fn,
                     void* arg, ag_watch_id* id) noexcept {
    try {
        unsigned f = 0;
        if (flags & AG_WATCH_IGNORE_HALF_CLOSE)
            f |= Monitor::kIgnoreHalfClose;
        if (flags & AG_WATCH_FRESH_SOCKET)
            f |= Monitor::kFreshSocket;
        if (flags & AG_WATCH_SAME_SOCKET)
            f |= Monitor::kSameSocket;
        if (flags & AG_WATCH_TUNNEL)
            f |= Monitor::kTunnel;
        abortguard::Status st = m->impl->watch(fd, f, &state->impl.token(), fn, arg, id);
        return st.is_ok() ? 0 : errno_of(st);
    } catch (...) {
        return ENOMEM;
    }
}

void ag_monitor_unwatch(ag_monitor* m, ag_watch_id id) noexcept {
    m->impl->unwatch(id);
}

int ag_monitor_set_nice(ag_monitor* m, int nice) noexcept {
    abortguard::Status st = m->impl->set_nice(nice);
    return st.is_ok() ? 0 : errno_of(st);
}

void ag_monitor_retire(ag_monitor* m) noexcept {
    m->impl->retire();
}

int ag_lifecycle_start(ag_monitor* m, const ag_lifecycle_config* config, ag_lifecycle** out,
                       char* err, size_t errlen) noexcept {
    return create_reporting(err, errlen, [&] {
        abortguard::Lifecycle::Config c;
        c.grace_ns = config->grace_ns;
        c.grace_terminate = config->grace_terminate != 0;
        c.exit_timeout_ns = config->exit_timeout_ns;
        c.conn_capacity = config->conn_capacity;
        c.terminate_interval_ns = config->terminate_interval_ns;
        c.permit = config->permit != nullptr ? &permit_thunk : nullptr;
        c.permit_arg = const_cast<ag_lifecycle_config*>(config);
        c.on_drain = config->on_drain;
        c.drain_arg = config->drain_arg;
        auto l = std::make_unique<ag_lifecycle>();
        abortguard::Status st = abortguard::Lifecycle::create(m->impl.get(), c, &l->impl);
        if (st.is_ok())
            *out = l.release();
        return st;
    });
}

void ag_lifecycle_notify_stop(ag_lifecycle* l, int graceful) noexcept {
    l->impl->notify_stop(graceful != 0);
}

void ag_lifecycle_notify_exit(ag_lifecycle* l) noexcept {
    l->impl->notify_exit();
}

void ag_lifecycle_note_child_cleanup(ag_lifecycle* l) noexcept {
    l->impl->note_child_cleanup();
}

int ag_lifecycle_draining(const ag_lifecycle* l) noexcept {
    return l->impl->draining() ? 1 : 0;
}

int ag_lifecycle_exiting(const ag_lifecycle* l) noexcept {
    return l->impl->exit_begun() ? 1 : 0;
}

int ag_lifecycle_exit_bounded(const ag_lifecycle* l) noexcept {
    return l->impl->config().exit_timeout_ns > 0 ? 1 : 0;
}

int ag_conn_add(ag_lifecycle* l, int fd) noexcept {
    abortguard::ConnTable* t = l->impl->conns();
    return t != nullptr ? t->add(fd) : -1;
}

void ag_conn_idle(ag_lifecycle* l, int slot) noexcept {
    if (abortguard::ConnTable* t = l->impl->conns())
        t->set_idle(slot);
}

int ag_conn_busy(ag_lifecycle* l, int slot) noexcept {
    abortguard::ConnTable* t = l->impl->conns();
    return t == nullptr || t->set_busy(slot) ? 1 : 0;
}

void ag_conn_remove(ag_lifecycle* l, int slot) noexcept {
    if (abortguard::ConnTable* t = l->impl->conns())
        t->remove(slot);
}

ag_state* ag_state_create(const char* uri, const char* handler, uint64_t vhost, unsigned flags,
                          ag_lifecycle* observer) noexcept {
    unsigned f = 0;
    if (flags & AG_STATE_STOP_ABORTS)
        f |= RequestState::kStopAborts;
    return new (std::nothrow)
        ag_state(uri, handler, f, vhost, observer != nullptr ? observer->impl.get() : nullptr);
}

int ag_state_destroy(ag_state* s) noexcept {
    const int released = s->impl.release_locks();
    delete s;
    return released;
}

int ag_state_aborted(const ag_state* s) noexcept {
    return s->impl.token().aborted() ? 1 : 0;
}

ag_reason_e ag_state_reason(const ag_state* s) noexcept {
    return static_cast<ag_reason_e>(s->impl.token().reason());
}

int64_t ag_state_aborted_at_ns(const ag_state* s) noexcept {
    return s->impl.token().aborted_at_ns();
}

int64_t ag_state_start_ns(const ag_state* s) noexcept {
    return s->impl.start_ns();
}

int ag_state_abort(ag_state* s, ag_reason_e reason) noexcept {
    return s->impl.token().abort(static_cast<Reason>(reason), abortguard::mono_ns()) ? 1 : 0;
}

int ag_state_stopping(const ag_state* s) noexcept {
    // A stop-abort is published an instant before the stop bit.
    const auto& t = s->impl.token();
    return t.stopping() || t.reason() == Reason::kServerStop ? 1 : 0;
}

int ag_state_wait_event(const ag_state* s, int64_t timeout_ns) noexcept {
    switch (s->impl.token().wait_event(abortguard::deadline_after(timeout_ns))) {
        case abortguard::Token::Wake::kAborted:
            return AG_WAIT_ABORTED;
        case abortguard::Token::Wake::kStopped:
            return AG_WAIT_STOPPED;
        case abortguard::Token::Wake::kTimeout:
            break;
    }
    return AG_WAIT_TIMEOUT;
}

void ag_state_set_response_done(ag_state* s) noexcept {
    s->impl.set_response_done();
}

int ag_state_on_abort(ag_state* s, ag_abort_fn* fn, void* arg) noexcept {
    try {
        auto cb = [fn, arg](Reason r) { fn(arg, static_cast<int>(r)); };
        return errno_or_zero(s->impl.on_abort(cb));
    } catch (...) {
        return ENOMEM;
    }
}

int ag_state_add_cleanup(ag_state* s, ag_cleanup_fn* tramp, ag_any_fn* user, void* arg1, void* arg2,
                         int when, const void* identity) noexcept {
    if (tramp == nullptr || when < AG_WHEN_ON_ABORT || when > AG_WHEN_ALWAYS)
        return EINVAL;
    try {
        // 2: run by the monitor thread for a terminate grace action.
        auto call = [tramp, user, arg1, arg2](bool aborted) {
            tramp(
                user, arg1, arg2,
                aborted ? (abortguard::Lifecycle::in_terminate() ? AG_ABORTED_TERMINATING : 1) : 0);
        };
        return errno_or_zero(
            s->impl.add_cleanup(call, static_cast<abortguard::CleanupWhen>(when), identity));
    } catch (...) {
        return ENOMEM;
    }
}

void ag_state_run_cleanups(ag_state* s, int aborted, int64_t slow_ns,
                           ag_registry_summary* out) noexcept {
    const abortguard::CleanupRegistry::Summary sum = s->impl.run_cleanups(aborted != 0, slow_ns);
    if (out != nullptr)
        *out = {sum.run, sum.failed, sum.slow, sum.total_ns, sum.slowest_ns};
}

int ag_state_lock_file(ag_state* s, const char* path, int exclusive, int64_t timeout_ns,
                       int64_t warn_ns, ag_lock_ref* out) noexcept {
    try {
        const int64_t deadline = timeout_ns < 0 ? abortguard::FileLock::kNoDeadline
                                                : abortguard::deadline_after(timeout_ns);
        const auto mode =
            exclusive ? abortguard::LockMode::kExclusive : abortguard::LockMode::kShared;
        RequestState::LockRef held;
        abortguard::Status st = s->impl.lock_file(path, mode, deadline, warn_ns, &held);
        if (!st.is_ok())
            return errno_of(st);
        *out = ag_lock_ref{s, held.slot, held.gen};
        return 0;
    } catch (...) {
        return ENOMEM;
    }
}

void ag_lock_release(ag_lock_ref lock) noexcept {
    if (lock.state != nullptr)
        RequestState::release_lock(RequestState::LockRef{&lock.state->impl, lock.slot, lock.gen});
}

void ag_inflight_foreach(ag_inflight_fn* fn, void* ctx) noexcept {
    try {
        RequestState::for_each(fn, ctx);
    } catch (...) {
        // A mutex failure: report nothing rather than crash.
    }
}

int ag_state_arm_upstream(ag_state* s, int fd, ag_upstream_fn* before, void* arg,
                          uint64_t* id) noexcept {
    try {
        abortguard::UpstreamCut* cut = s->impl.upstream();
        if (cut == nullptr)
            return ENOMEM;
        abortguard::Status st = cut->arm(fd, before, arg, id);
        return st.is_ok() ? 0 : errno_of(st);
    } catch (...) {
        return ENOMEM;
    }
}

int ag_state_disarm_upstream(ag_state* s, uint64_t id) noexcept {
    abortguard::UpstreamCut* cut = s->impl.upstream();
    return cut != nullptr && cut->disarm(id) ? 1 : 0;
}

int ag_monitor_watch_flag(ag_monitor* m, const unsigned* flag, ag_reason_e reason, ag_state* state,
                          ag_abort_fn* fn, void* arg, ag_watch_id* id) noexcept {
    try {
        abortguard::Status st =
            m->flags->watch(flag, static_cast<Reason>(reason), &state->impl.token(), fn, arg, id);
        return st.is_ok() ? 0 : errno_of(st);
    } catch (...) {
        return ENOMEM;
    }
}

void ag_monitor_unwatch_flag(ag_monitor* m, ag_watch_id id) noexcept {
    m->flags->unwatch(id);
}

void ag_monitor_nudge_flags(ag_monitor* m) noexcept {
    if (m->flags->waiting())
        m->flags->nudge();
}

void ag_monitor_nudge_flags_soon(ag_monitor* m) noexcept {
    if (m->flags->waiting())
        m->flags->nudge_soon();
}

int ag_keepalive_apply(int fd, int idle_s, int interval_s, int count,
                       ag_keepalive_saved* saved) noexcept {
    try {
        abortguard::KeepaliveSettings ks;
        ks.idle_s = idle_s;
        ks.interval_s = interval_s;
        ks.count = count;
        abortguard::KeepaliveSaved old;
        abortguard::Status st = abortguard::apply_keepalive(fd, ks, &old);
        *saved = {old.saved ? 1 : 0, old.keepalive, old.idle_s,
                  old.interval_s,    old.count,     old.user_timeout_ms};
        return st.is_ok() ? 0 : errno_of(st);
    } catch (...) {
        *saved = {};
        return ENOMEM;
    }
}

void ag_keepalive_restore(int fd, ag_keepalive_saved* saved) noexcept {
    abortguard::KeepaliveSaved old;
    old.saved = saved->saved != 0;
    old.keepalive = saved->keepalive;
    old.idle_s = saved->idle_s;
    old.interval_s = saved->interval_s;
    old.count = saved->count;
    old.user_timeout_ms = saved->user_timeout_ms;
    abortguard::restore_keepalive(fd, &old);
    saved->saved = 0;
}

int ag_probe_socket(int fd, int ignore_half_close) noexcept {
    return static_cast<int>(abortguard::probe_socket(fd, ignore_half_close != 0));
}

int ag_probe_tunnel(int fd) noexcept {
    return static_cast<int>(abortguard::probe_socket(fd, true, true));
}

}  // extern "C"
