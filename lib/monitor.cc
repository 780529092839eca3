#include "monitor.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <new>
#include <system_error>

#include "clock.h"
#include "log.h"
#include "probe.h"
#include "stats.h"

namespace abortguard {

namespace {

// The eventfd's key; slot keys always have a non-zero generation in the
// upper half, so they can never collide with it.
constexpr uint64_t kWakeKey = 0;

uint64_t make_key(uint32_t slot, uint32_t gen) {
    return (uint64_t{gen} << 32) | slot;
}
uint32_t key_slot(uint64_t key) {
    return static_cast<uint32_t>(key);
}
uint32_t key_gen(uint64_t key) {
    return static_cast<uint32_t>(key >> 32);
}

void sleep_ns(int64_t ns) {
    struct timespec ts = to_timespec(ns);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

}  // namespace

Status Monitor::create(std::unique_ptr<Monitor>* out) {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return Status::from_errno(errno, "epoll_create1");
    const int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd < 0) {
        const int err = errno;
        close(epfd);
        return Status::from_errno(err, "eventfd");
    }
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeKey;
    std::unique_ptr<Monitor> m(new (std::nothrow) Monitor(epfd, wakefd));
    if (!m) {
        close(epfd);
        close(wakefd);
        return Status::from_errno(ENOMEM, "monitor");
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) != 0) {
        return Status::from_errno(errno, "epoll_ctl(eventfd)");
    }
    // The thread inherits this mask: no signal is ever delivered to it.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    Status st;
    try {
        m->thread_ = std::thread([p = m.get()] { p->run(); });
        pthread_setname_np(m->thread_.native_handle(), "ag-monitor");
    } catch (const std::system_error& e) {
        st = Status::from_errno(e.code().value(), "starting the monitor thread");
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (st.is_ok())
        *out = std::move(m);
    return st;
}

Monitor::~Monitor() {
    stop(INT64_MAX / 2);
    close(wakefd_);
    close(epfd_);
}

bool Monitor::stop(int64_t bound_ns) noexcept {
    if (joined_ || !thread_.joinable())
        return true;
    stopping_.store(true, std::memory_order_release);
    wake();
    // Poll instead of waiting on a condition: no lock, signal-safe calls only.
    const int64_t deadline = mono_ns() + bound_ns;
    while (!exited_.load(std::memory_order_acquire)) {
        if (mono_ns() >= deadline)
            return false;
        sleep_ns(1000000);
    }
    thread_.join();
    joined_ = true;
    return true;
}

namespace {

uint32_t next_gen(uint32_t gen) {
    return gen + 1 == 0 ? 1 : gen + 1;
}

int ctl(int epfd, int op, int fd, struct epoll_event* ev) {
    return epoll_ctl(epfd, op, fd, ev) == 0 ? 0 : errno;
}

}  // namespace

// One syscall when the registration must be (re)armed: MOD re-arms the one
// a previous watch of this fd left parked; ADD registers a new socket. The
// other op is the fallback when the guess was wrong (the parked socket was
// closed and its number reused: ENOENT; a registration already there:
// EEXIST).
Status Monitor::arm(int fd, bool parked, unsigned flags, struct epoll_event* ev) {
    const bool try_mod = parked && !(flags & kFreshSocket);
    int err = ctl(epfd_, try_mod ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, ev);
    if (err == (try_mod ? ENOENT : EEXIST)) {
        err = ctl(epfd_, try_mod ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, ev);
    }
    return err == 0 ? Status::ok() : Status::from_errno(err, "epoll_ctl");
}

Status Monitor::watch(int fd, unsigned flags, Token* token, AbortFn fn, void* arg, WatchId* id) {
    if (fd < 0)
        return Status::from_errno(EBADF, "watch");
    const uint32_t wanted = EPOLLONESHOT | ((flags & kIgnoreHalfClose) ? 0u : uint32_t{EPOLLRDHUP});
    try {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_.load(std::memory_order_acquire) || retired_.load(std::memory_order_acquire)) {
            return Status::from_errno(ECANCELED, "monitor stopped");
        }
        if (static_cast<size_t>(fd) >= slots_.size())
            slots_.resize(static_cast<size_t>(fd) + 1);
        Slot& s = slots_[fd];
        if (s.state != SlotState::kUnused && s.state != SlotState::kParked) {
            return Status::from_errno(EBUSY, "the socket is already watched");
        }
        // The same connection's next request, and its registration never
        // fired: still armed in the kernel for exactly this socket.
        const bool still_armed =
            (flags & kSameSocket) && s.state == SlotState::kParked && s.events == wanted;
        if (!still_armed) {
            struct epoll_event ev = {};
            ev.events = wanted;
            ev.data.u64 = make_key(static_cast<uint32_t>(fd), next_gen(s.kgen));
            Status st = arm(fd, s.state == SlotState::kParked, flags, &ev);
            if (!st.is_ok())
                return st;
            s.kgen = next_gen(s.kgen);
            s.events = wanted;
        }
        s.epoch = next_gen(s.epoch);
        s.state = SlotState::kArmed;
        s.token = token;
        s.fn = fn;
        s.arg = arg;
        ++live_;
        *id = make_key(static_cast<uint32_t>(fd), s.epoch);
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "growing the watch table");
    }
}

// No syscall: the registration stays in the epoll set, parked, so that the
// connection's next request can take it over as it is, or re-arm it with one
// MOD if it fired meanwhile. When the socket is closed, the kernel removes
// the registration itself.
void Monitor::unwatch(WatchId id) noexcept {
    const uint32_t idx = key_slot(id);
    std::unique_lock<std::mutex> lock(mu_);
    auto ours = [&] {
        const Slot& s = slots_[idx];
        return s.epoch == key_gen(id) && s.state != SlotState::kParked &&
               s.state != SlotState::kUnused;
    };
    if (idx >= slots_.size() || !ours())
        return;
    // The callback for this watch may be running right now: wait it out.
    fired_.wait(lock, [&] { return slots_[idx].state != SlotState::kFiring; });
    if (!ours())
        return;
    Slot& s = slots_[idx];
    s.state = SlotState::kParked;
    s.token = nullptr;
    s.fn = nullptr;
    s.arg = nullptr;
    --live_;
}

size_t Monitor::watch_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_;
}

// Phase one of a batch, under the lock: the events whose watch is still
// armed pin their slot (kFiring: unwatch() waits, so fd, token and arg stay
// valid) and are copied out.
int Monitor::select_fired(const struct epoll_event* events, int n, Firing* out) {
    int nf = 0;
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        const uint32_t idx = key_slot(key);
        if (key == kWakeKey || idx >= slots_.size())
            continue;
        Slot& s = slots_[idx];
        if (s.kgen != key_gen(key))
            continue;  // a registration this slot no longer uses
        s.events = 0;  // one-shot: the kernel has disabled it
        if (s.state != SlotState::kArmed)
            continue;  // parked: no watch wants it
        s.state = SlotState::kFiring;
        out[nf++] = Firing{idx, events[i].events, s.token, s.fn, s.arg, false};
    }
    return nf;
}

// Every event of a batch is claimed (the token reads aborted, the
// connection is marked) before any waiter is woken: a woken handler thread
// may preempt this one, and with a thousand aborts at once the last of the
// batch would otherwise wait for all of them to run.
void Monitor::dispatch(const struct epoll_event* events, int n, int64_t woke_ns) noexcept {
    Firing fired[kBatch];
    const int nf = select_fired(events, n, fired);
    for (int i = 0; i < nf; ++i) {
        Firing& f = fired[i];
        const int fd = static_cast<int>(f.idx);
        const Reason reason = classify_socket_event(f.events, fd);
        const int64_t now = mono_ns();
        f.first = f.token->claim(reason, now);
        if (f.first)
            stats::record(stats::Latency::kDetection, now - woke_ns);
        AG_LOG(kDebug, "AG0101: client socket %d closed (%s, events 0x%x)", fd, reason_name(reason),
               f.events);
        if (f.first && f.fn != nullptr)
            f.fn(f.arg, static_cast<int>(reason));
    }
    for (int i = 0; i < nf; ++i) {
        if (fired[i].first)
            fired[i].token->notify();
        {
            std::lock_guard<std::mutex> lock(mu_);
            slots_[fired[i].idx].state = SlotState::kFired;
        }
        fired_.notify_all();
    }
}

// epoll_wait's timeout for the next timer: rounded up to whole ms, so a
// timer never fires early.
int Monitor::wait_ms() const {
    const int64_t next = timers_.next_deadline();
    if (next == INT64_MAX)
        return -1;
    const int64_t left = next - mono_ns();
    if (left <= 0)
        return 0;
    return static_cast<int>(std::min<int64_t>((left + 999999) / 1000000, INT32_MAX));
}

void Monitor::wake() noexcept {
    const uint64_t one = 1;
    while (::write(wakefd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

void Monitor::run() noexcept {
    struct epoll_event events[kBatch];
    while (!stopping_.load(std::memory_order_acquire)) {
        const int n = epoll_wait(epfd_, events, kBatch, wait_ms());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            AG_LOG(kError, "AG0103: epoll_wait failed (errno %d); abort detection stops", errno);
            break;
        }
        const int64_t woke_ns = mono_ns();
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u64 == kWakeKey) {
                uint64_t drained;
                while (::read(wakefd_, &drained, sizeof drained) < 0 && errno == EINTR) {
                }
            }
        }
        dispatch(events, n, woke_ns);
        timers_.run_due(mono_ns());
        if (posted_.load(std::memory_order_relaxed) != 0) {
            // in_post_ before loading the handler: set_post_handler(nullptr)
            // clears the handler, then waits for in_post_ to drop.
            in_post_.store(true, std::memory_order_seq_cst);
            const PostFn fn = post_fn_.load(std::memory_order_seq_cst);
            if (fn != nullptr)
                fn(post_arg_.load(std::memory_order_relaxed),
                   posted_.exchange(0, std::memory_order_acq_rel));
            in_post_.store(false, std::memory_order_seq_cst);
        }
    }
    exited_.store(true, std::memory_order_release);
}

void Monitor::set_post_handler(PostFn fn, void* arg) noexcept {
    if (fn == nullptr) {
        post_fn_.store(nullptr, std::memory_order_seq_cst);
        while (in_post_.load(std::memory_order_seq_cst))
            std::this_thread::yield();
        return;
    }
    post_arg_.store(arg, std::memory_order_relaxed);
    post_fn_.store(fn, std::memory_order_seq_cst);
    wake();  // bits posted before
}

void Monitor::post(uint32_t bits) noexcept {
    posted_.fetch_or(bits, std::memory_order_acq_rel);
    const int saved = errno;  // a signal handler must not change it
    wake();
    errno = saved;
}

void Monitor::retire() noexcept {
    retired_.store(true, std::memory_order_release);
}

bool Monitor::on_monitor_thread() const noexcept {
    return std::this_thread::get_id() == thread_.get_id();
}

Status Monitor::add_timer(int64_t deadline_ns, TimerFn fn, void* arg, TimerId* id) {
    try {
        bool earliest = false;
        *id = timers_.add(deadline_ns, fn, arg, &earliest);
        // A sleeping monitor computed its timeout from an older deadline.
        if (earliest && std::this_thread::get_id() != thread_.get_id())
            wake();
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "adding a timer");
    }
}

void Monitor::cancel_timer(TimerId id) noexcept {
    timers_.cancel(id);
}

}  // namespace abortguard
