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

std::atomic<Lifecycle*> g_current{nullptr};
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
    : monitor_(monitor), config_(config), exit_fn_(&default_exit) {
    if (config.conn_capacity > 0)
        conns_.reset(new ConnTable(config.conn_capacity));
}

Lifecycle::~Lifecycle() {
    closing_.store(true, std::memory_order_seq_cst);
    Lifecycle* self = this;
    g_current.compare_exchange_strong(self, nullptr);
    monitor_->set_post_handler(nullptr, nullptr);  // waits for a running on_post
    // The scan re-arms itself; once closing_ is seen it stops doing so.
    for (uint64_t id; (id = scan_timer_.exchange(0)) != 0;)
        monitor_->cancel_timer(id);
    if (have_backstop_)
        timer_delete(backstop_);
}

void Lifecycle::install() noexcept {
    g_current.store(this, std::memory_order_release);
}

Lifecycle* Lifecycle::current() noexcept {
    return g_current.load(std::memory_order_acquire);
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

void Lifecycle::on_state_created(RequestState* state) noexcept {
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
            AG_LOG(kDebug, "AG0610: child process %d is stopping (%s)", static_cast<int>(getpid()),
                   graceful ? "graceful" : "ungraceful");
        }
    }
    if (self->stopping() || self->exit_begun())
        self->ensure_scan();
}

// ---- grace period

void Lifecycle::on_state_aborted(RequestState* state) noexcept {
    if (config_.grace_ns <= 0 || closing_.load(std::memory_order_acquire))
        return;
    state->arm_grace(&Lifecycle::arm_grace, this);
}

uint64_t Lifecycle::arm_grace(void* self_arg, RequestState* state) {
    auto* self = static_cast<Lifecycle*>(self_arg);
    const int64_t deadline = sat_add(state->token().aborted_at_ns(), self->config_.grace_ns);
    Monitor::TimerId id = 0;
    if (!self->monitor_->add_timer(deadline, &Lifecycle::grace_fired, state, &id).is_ok()) {
        AG_LOG(kWarn, "AG0604: cannot arm a grace timer (out of memory)");
        return 0;
    }
    return id;
}

void Lifecycle::cancel_grace(uint64_t id) noexcept {
    // A state with a grace timer dies before the lifecycle that armed it.
    if (Lifecycle* self = current())
        self->monitor_->cancel_timer(id);
}

void Lifecycle::grace_fired(void* state_arg) {
    // The state is alive: its destructor cancels this timer synchronously.
    if (Lifecycle* self = current())
        self->grace_expired(static_cast<RequestState*>(state_arg));
}

void Lifecycle::grace_expired(RequestState* state) noexcept {
    ag_inflight_info info;
    state->snapshot(&info);
    const int64_t now = mono_ns();
    Line what;
    if (info.cleanup_since_ns != 0)
        what.add(" (in %s)", info.cleanup);
    else if (info.ending_since_ns != 0)
        what.add(" (ending)");
    describe_locks(info, now, &what);
    AG_LOG(kWarn,
           "AG0601: the handler %s for %s is still running %lld ms after its client left (%s)%s",
           info.handler[0] ? info.handler : "-", info.uri, ms(now - info.aborted_at_ns),
           reason_name(static_cast<Reason>(info.reason)), what.c_str());
    stats::count(stats::Counter::kGraceActions);
    if (config_.grace_terminate)
        terminate(state);
}

void Lifecycle::terminate(RequestState* state) noexcept {
    // The cleanups below are the application's and may hang: the kernel
    // ends the process anyway.
    arm_backstop(config_.exit_timeout_ns > 0 ? config_.exit_timeout_ns : 5 * kSecond);
    const int pid = static_cast<int>(getpid());
    AG_LOG(kWarn,
           "AG0602: AbortGuardGraceAction terminate: running the request's abort cleanups on the "
           "monitor thread and releasing its locks, then ending child process %d",
           pid);
    t_in_terminate = true;
    const CleanupRegistry::Summary sum = state->run_cleanups(true, 0);
    t_in_terminate = false;
    const int released = state->release_locks();
    if (released > 0)
        stats::count(stats::Counter::kLocksReleasedByAbort, static_cast<uint64_t>(released));
    AG_LOG(kWarn,
           "AG0603: ran %d cleanup(s) (%d failed), released %d lock(s); child process %d exits "
           "now so that the parent replaces it",
           sum.run, sum.failed, released, pid);
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
    if (stop_ns != 0) {
        struct Find {
            int64_t now, stop_ns, limit;
            bool hung;
            ag_inflight_info info;
        } f{now, stop_ns, limit, false, {}};
        RequestState::for_each(
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
    RequestState::for_each(
        [](const ag_inflight_info* info, void* ctx) {
            auto* cc = static_cast<Collect*>(ctx);
            describe_request(*info, cc->now, cc->line);
            ++cc->n;
        },
        &c);
    if (c.n == 0)
        waiting.add(" no request of ours");
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
    exit_fn_.load()(0);
}

}  // namespace abortguard
