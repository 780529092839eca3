#include "lifecycle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <new>
#include <thread>

#include "clock.h"
#include "log.h"
#include "reason.h"
#include "request_state.h"
#include "stats.h"

namespace abortguard {

namespace {

thread_local bool t_in_terminate = false;

void default_exit(int status) {
    _exit(status);
}

long long ms(int64_t ns) {
    return static_cast<long long>(ns / 1000000);
}

// A fixed buffer for one log line; never allocates, truncates quietly.
class Line {
  public:
    void add(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        if (len_ >= sizeof buf_ - 1)
            return;
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(buf_ + len_, sizeof buf_ - len_, fmt, ap);
        va_end(ap);
        if (n > 0)
            len_ = std::min(sizeof buf_ - 1, len_ + static_cast<size_t>(n));
    }
    const char* c_str() const { return buf_; }
    bool empty() const { return len_ == 0; }

  private:
    char buf_[900] = {};
    size_t len_ = 0;
};

void describe_locks(const ag_inflight_info& info, int64_t now, Line* out) {
    if (info.nlocks == 0) {
        out->add("; no locks held");
        return;
    }
    out->add("; %d lock(s) held:", info.nlocks);
    const int listed = std::min<int>(info.nlocks, sizeof info.locks / sizeof info.locks[0]);
    for (int i = 0; i < listed; ++i) {
        out->add(" %s (%s, %lld ms)", info.locks[i].path, info.locks[i].exclusive ? "ex" : "sh",
                 ms(now - info.locks[i].since_ns));
    }
}

// What one in-flight request is doing, for a report.
void describe_request(const ag_inflight_info& info, int64_t now, Line* out) {
    out->add(" [%s (handler %s): ", info.uri, info.handler[0] ? info.handler : "-");
    if (info.cleanup_since_ns != 0) {
        out->add("%s running for %lld ms", info.cleanup, ms(now - info.cleanup_since_ns));
    } else if (info.ending_since_ns != 0) {
        out->add("ending for %lld ms", ms(now - info.ending_since_ns));
    } else {
        out->add("handler running for %lld ms", ms(now - info.start_ns));
    }
    if (info.aborted_at_ns != 0)
        out->add(", aborted %lld ms ago", ms(now - info.aborted_at_ns));
    if (info.nlocks > 0)
        out->add(", %d lock(s) held", info.nlocks);
    out->add("]");
}

}  // namespace

Status Lifecycle::create(Monitor* monitor, const Config& config, std::unique_ptr<Lifecycle>* out) {
    try {
        std::unique_ptr<Lifecycle> life(new Lifecycle(monitor, config));
        if (config.kill_backstop) {
            struct sigevent ev = {};
            ev.sigev_notify = SIGEV_SIGNAL;
            ev.sigev_signo = SIGKILL;
            if (timer_create(CLOCK_MONOTONIC, &ev, &life->backstop_) == 0) {
                life->have_backstop_ = true;
            } else {
                AG_LOG(kInfo, "AG0611: no SIGKILL backstop timer (errno %d)", errno);
            }
        }
        monitor->set_post_handler(&Lifecycle::on_post, life.get());
        *out = std::move(life);
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "creating the lifecycle");
    }
}

Lifecycle::Lifecycle(Monitor* monitor, const Config& config)
    : monitor_(monitor), config_(config), born_ns_(mono_ns()), exit_fn_(&default_exit) {
    if (config.conn_capacity > 0)
        conns_.reset(new ConnTable(config.conn_capacity));
}

Lifecycle::~Lifecycle() {
    closing_.store(true, std::memory_order_seq_cst);
    monitor_->set_post_handler(nullptr, nullptr);  // waits for a running on_post
    // The scan re-arms itself; once closing_ is seen it stops doing so.
    for (uint64_t id; (id = scan_timer_.exchange(0)) != 0;)
        monitor_->cancel_timer(id);
    for (uint64_t id; (id = drain_timer_.exchange(0)) != 0;)
        monitor_->cancel_timer(id);
    if (have_backstop_)
        timer_delete(backstop_);
}

bool Lifecycle::in_terminate() noexcept {
    return t_in_terminate;
}

void Lifecycle::notify_stop(bool graceful) noexcept {
    const int64_t now = mono_ns();
    int64_t none = 0;
    stop_ns_.compare_exchange_strong(none, now, std::memory_order_acq_rel);
    if (!graceful) {
        none = 0;
        exit_ns_.compare_exchange_strong(none, now, std::memory_order_acq_rel);
        if (config_.exit_timeout_ns > 0)
            arm_backstop(sat_add(config_.exit_timeout_ns, kSecond));
    }
    monitor_->post(graceful ? kPostStop : kPostStop | kPostUngraceful);
}

void Lifecycle::notify_exit() noexcept {
    int64_t none = 0;
    exit_ns_.compare_exchange_strong(none, mono_ns(), std::memory_order_acq_rel);
    if (config_.exit_timeout_ns > 0)
        arm_backstop(sat_add(config_.exit_timeout_ns, kSecond));
    monitor_->post(kPostExit);
}

// Async-signal-safe (timer_settime is).
void Lifecycle::arm_backstop(int64_t in_ns) noexcept {
    if (!have_backstop_ || in_ns <= 0 || backstop_armed_.exchange(true))
        return;
    struct itimerspec its = {};
    its.it_value = to_timespec(in_ns);
    timer_settime(backstop_, 0, &its, nullptr);
}

// ---- the stop notice (monitor thread, and request threads for new states)

void Lifecycle::deliver(RequestState* state, int64_t now) noexcept {
    // A request whose response is complete, or that is already ending, has
    // nothing left to end early.
    if (state->ending() || state->response_done())
        return;
    if (state->stop_aborts())
        state->token().abort(Reason::kServerStop, now);
    (void)now;
    if (state->token().stop())
        stats::count(stats::Counter::kStopNotices);
}

void Lifecycle::state_created(RequestState* state) noexcept {
    if (stopping())
        deliver(state, mono_ns());
}

void Lifecycle::on_post(void* self_arg, uint32_t bits) {
    auto* self = static_cast<Lifecycle*>(self_arg);
    if (bits & (kPostStop | kPostUngraceful)) {
        const bool graceful = (bits & kPostUngraceful) == 0;
        int requests = 0;
        if (!self->delivered_) {
            self->delivered_ = true;
            struct Count {
                Lifecycle* self;
                int64_t now;
                int n;
            } c{self, mono_ns(), 0};
            RequestState::for_each_state(
                [](RequestState* s, void* ctx) {
                    auto* cc = static_cast<Count*>(ctx);
                    if (!s->ending() && !s->response_done() && !s->token().stopping())
                        ++cc->n;
                    cc->self->deliver(s, cc->now);
                },
                &c);
            requests = c.n;
        }
        const int closed = self->conns_ ? self->conns_->shutdown_idle() : 0;
        // Every child says it at exit (prefork only ever says "ungraceful"):
        // worth an info line only when it changed something.
        if (requests > 0 || closed > 0) {
            AG_LOG(kInfo,
                   "AG0610: child process %d is stopping (%s): stop notice to %d request(s), %d "
                   "idle keep-alive connection(s) closed",
                   static_cast<int>(getpid()), graceful ? "graceful" : "ungraceful", requests,
                   closed);
        } else {
            AG_LOG(kDebug, "AG0615: child process %d is stopping (%s), with nothing to notify",
                   static_cast<int>(getpid()), graceful ? "graceful" : "ungraceful");
        }
    }
    if (self->stopping() || self->exit_begun())
        self->ensure_scan();
}

// ---- grace period

uint64_t Lifecycle::arm_grace_timer(RequestState* state) noexcept {
    if (config_.grace_ns <= 0 || closing_.load(std::memory_order_acquire))
        return 0;
    const int64_t deadline = sat_add(state->token().aborted_at_ns(), config_.grace_ns);
    Monitor::TimerId id = 0;
    if (!monitor_->add_timer(deadline, &Lifecycle::grace_fired, state, &id).is_ok()) {
        AG_LOG(kWarn, "AG0604: cannot arm a grace timer (out of memory)");
        return 0;
    }
    return id;
}

void Lifecycle::cancel_grace_timer(uint64_t timer) noexcept {
    monitor_->cancel_timer(timer);
}

void Lifecycle::grace_fired(void* state_arg) {
    // The state is alive: its destructor cancels this timer synchronously.
    // Only a Lifecycle arms grace timers, so the state's observer is one.
    auto* state = static_cast<RequestState*>(state_arg);
    static_cast<Lifecycle*>(state->observer())->grace_expired(state);
}

void Lifecycle::grace_expired(RequestState* state) noexcept {
    ag_inflight_info info;
    state->snapshot(&info);
    const int64_t now = mono_ns();
    Line what;
    describe_locks(info, now, &what);
    AG_LOG(kWarn,
           "AG0601: the handler %s for %s is still running %lld ms after its client left (%s)%s",
           info.handler[0] ? info.handler : "-", info.uri, ms(now - info.aborted_at_ns),
           reason_name(static_cast<Reason>(info.reason)), what.c_str());
    stats::count(stats::Counter::kGraceActions);
    if (config_.grace_terminate)
        terminate(state);
}

// The per-child bound first: a refusal there must not use up the
// server-wide one.
bool Lifecycle::permitted(int64_t now) noexcept {
    if (now - born_ns_ < config_.terminate_interval_ns)
        return false;
    return config_.permit == nullptr ||
           config_.permit(config_.permit_arg, now, config_.terminate_interval_ns);
}

void Lifecycle::terminate(RequestState* state) noexcept {
    if (!draining() && !permitted(mono_ns())) {
        stats::count(stats::Counter::kTerminateRefused);
        AG_LOG(kWarn,
               "AG0605: AbortGuardGraceAction terminate refused by the rate bound (one per %lld ms "
               "server-wide, none in a child's first %lld ms): the handler keeps running",
               ms(config_.terminate_interval_ns), ms(config_.terminate_interval_ns));
        return;
    }
    const int64_t bound = config_.exit_timeout_ns > 0 ? config_.exit_timeout_ns : kDefaultDrainNs;
    // The cleanups below are the application's and may hang: whatever
    // happens, the kernel ends the process a second after the drain's bound.
    arm_backstop(sat_add(bound, kSecond));
    if (!draining())
        stats::count(stats::Counter::kTerminations);  // once per child: it drains once
    give_up_on(state);
    begin_drain();
}

// Release: the hung request's abort cleanups, then its locks.
void Lifecycle::give_up_on(RequestState* state) noexcept {
    AG_LOG(kWarn,
           "AG0602: AbortGuardGraceAction terminate: running the request's abort cleanups on the "
           "monitor thread and releasing its locks");
    state->mark_given_up();
    t_in_terminate = true;
    const CleanupRegistry::Summary sum = state->run_cleanups(true, 0);
    t_in_terminate = false;
    const int released = state->release_locks();
    if (released > 0)
        stats::count(stats::Counter::kLocksReleasedByAbort, static_cast<uint64_t>(released));
    AG_LOG(kWarn, "AG0603: ran %d cleanup(s) (%d failed), released %d lock(s)", sum.run, sum.failed,
           released);
}

// ---- the drain (monitor thread)

void Lifecycle::begin_drain() noexcept {
    int64_t none = 0;
    if (!drain_ns_.compare_exchange_strong(none, mono_ns(), std::memory_order_acq_rel))
        return;  // already draining: the hung request was given up on, that is all
    drain_serial_ = RequestState::last_serial();
    if (config_.on_drain != nullptr)
        config_.on_drain(config_.drain_arg);
    AG_LOG(kWarn,
           "AG0607: child process %d drains: it takes no new work, and %d other request(s) may "
           "finish within %lld ms; then it exits",
           static_cast<int>(getpid()), drain_remaining(),
           ms(config_.exit_timeout_ns > 0 ? config_.exit_timeout_ns : kDefaultDrainNs));
    // As at a graceful stop: the requests get the stop notice (a long-poll
    // answers now) and idle keep-alive connections are closed.
    notify_stop(true);
    drain_check(this);
}

// Requests in flight when the drain began that are not given up on.
int Lifecycle::drain_remaining() const noexcept {
    struct Count {
        uint64_t up_to;
        int n;
    } c{drain_serial_, 0};
    RequestState::for_each_state(
        [](RequestState* s, void* ctx) {
            auto* cc = static_cast<Count*>(ctx);
            if (s->serial() <= cc->up_to && !s->given_up())
                ++cc->n;
        },
        &c);
    return c.n;
}

void Lifecycle::drain_check(void* self_arg) {
    auto* self = static_cast<Lifecycle*>(self_arg);
    self->drain_timer_.store(0);
    if (self->closing_.load() || self->gave_up_.load())
        return;
    const int64_t now = mono_ns();
    const int64_t bound =
        self->config_.exit_timeout_ns > 0 ? self->config_.exit_timeout_ns : kDefaultDrainNs;
    if (self->drain_remaining() == 0) {
        AG_LOG(kWarn, "AG0608: child process %d drained in %lld ms; it exits now",
               static_cast<int>(getpid()), ms(now - self->drain_ns_.load()));
        self->end_process();
        return;
    }
    if (now - self->drain_ns_.load() >= bound) {
        self->cut_and_exit();
        return;
    }
    Monitor::TimerId id = 0;
    const int64_t period = std::clamp<int64_t>(bound / 100, 2 * 1000000, 50 * 1000000);
    if (self->monitor_->add_timer(now + period, &Lifecycle::drain_check, self, &id).is_ok())
        self->drain_timer_.store(id);
}

// Force, last: every request still running is named, its abort cleanups run
// (under its shard's lock, which keeps it alive; the backstop bounds it),
// and the process ends.
void Lifecycle::cut_and_exit() noexcept {
    struct Cut {
        int64_t now;
        int n;
    } c{mono_ns(), 0};
    RequestState::for_each_state(
        [](RequestState* s, void* ctx) {
            auto* cc = static_cast<Cut*>(ctx);
            if (s->given_up())
                return;
            if (++cc->n <= kNamedAtExit) {
                ag_inflight_info info;
                s->snapshot(&info);
                Line line;
                describe_request(info, cc->now, &line);
                AG_LOG(kWarn, "AG0609: cut at exit:%s", line.c_str());
            }
            s->mark_given_up();
            t_in_terminate = true;
            s->run_cleanups(true, 0);
            t_in_terminate = false;
            s->release_locks();
            stats::count(stats::Counter::kRequestsCutAtExit);
        },
        &c);
    if (c.n > kNamedAtExit)
        AG_LOG(kWarn, "AG0614: cut at exit: and %d more request(s)", c.n - kNamedAtExit);
    AG_LOG(kWarn,
           "AG0612: child process %d did not drain within its bound: %d request(s) cut; it exits "
           "now",
           static_cast<int>(getpid()), c.n);
    end_process();
}

// ---- exit bound

void Lifecycle::ensure_scan() noexcept {
    if (config_.exit_timeout_ns <= 0 || scan_timer_.load() != 0 || closing_.load())
        return;
    const int64_t period =
        std::clamp<int64_t>(config_.exit_timeout_ns / 10, 10 * 1000000, 250 * 1000000);
    Monitor::TimerId id = 0;
    if (monitor_->add_timer(mono_ns() + period, &Lifecycle::scan_fired, this, &id).is_ok())
        scan_timer_.store(id);
}

void Lifecycle::scan_fired(void* self_arg) {
    auto* self = static_cast<Lifecycle*>(self_arg);
    self->scan_timer_.store(0);
    if (self->closing_.load() || self->gave_up_.load())
        return;
    const int64_t now = mono_ns();
    const int64_t limit = self->config_.exit_timeout_ns;
    const int64_t exit_ns = self->exit_ns_.load();
    if (exit_ns != 0 && now - exit_ns >= limit) {
        Line why;
        why.add("its exit began %lld ms ago", ms(now - exit_ns));
        self->give_up(why.c_str());
        return;
    }
    const int64_t stop_ns = self->stop_ns_.load();
    // A draining child's requests are the drain's to bound (drain_check).
    if (stop_ns != 0 && !self->draining()) {
        struct Find {
            int64_t now, stop_ns, limit;
            bool hung;
            ag_inflight_info info;
        } f{now, stop_ns, limit, false, {}};
        RequestState::try_for_each(
            [](const ag_inflight_info* info, void* ctx) {
                auto* ff = static_cast<Find*>(ctx);
                if (ff->hung || info->ending_since_ns == 0)
                    return;
                if (ff->now - std::max(info->ending_since_ns, ff->stop_ns) >= ff->limit) {
                    ff->hung = true;
                    ff->info = *info;
                }
            },
            &f);
        if (f.hung) {
            Line why;
            why.add("the cleanups of %s have run for %lld ms in a stopping child", f.info.uri,
                    ms(now - f.info.ending_since_ns));
            self->give_up(why.c_str());
            return;
        }
    }
    self->ensure_scan();
}

void Lifecycle::give_up(const char* why) noexcept {
    const int64_t now = mono_ns();
    struct Collect {
        int64_t now;
        Line* line;
        int n;
    };
    Line waiting;
    Collect c{now, &waiting, 0};
    // try_: the exit may have interrupted a thread holding a shard's lock.
    const bool complete = RequestState::try_for_each(
        [](const ag_inflight_info* info, void* ctx) {
            auto* cc = static_cast<Collect*>(ctx);
            describe_request(*info, cc->now, cc->line);
            ++cc->n;
        },
        &c);
    if (c.n == 0)
        waiting.add(complete ? " no request of ours" : " requests that could not be listed");
    else if (!complete)
        waiting.add(" (and requests that could not be listed)");
    if (conns_ && conns_->open_count() > 0)
        waiting.add(", %zu client connection(s) still open", conns_->open_count());
    if (exit_begun()) {
        waiting.add(child_cleanup_ran_.load()
                        ? ", the child-exit cleanups that run after mod_abortguard's own "
                          "(registered before it) or the process's exit handlers"
                        : ", the child-exit cleanups that run before mod_abortguard's own (other "
                          "modules' child pool cleanups)");
    }
    AG_LOG(kWarn,
           "AG0620: child process %d did not finish stopping within AbortGuardExitTimeout "
           "(%lld ms): %s; still waiting for:%s; exiting now",
           static_cast<int>(getpid()), ms(config_.exit_timeout_ns), why, waiting.c_str());
    end_process();
}

void Lifecycle::end_process() noexcept {
    gave_up_.store(true);
    // _exit() skips the child pool's cleanups: requests given up on or still
    // running leave the in-flight gauge here.
    stats::forget_in_flight();
    exit_fn_.load()(0);
}

}  // namespace abortguard
