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
#include "futex.h"
#include "log.h"
#include "probe.h"
#include "sched_slice.h"
#include "stats.h"

namespace abortguard {

namespace {

thread_local bool t_monitor_thread = false;

// The eventfd's key; slot keys always have a non-zero generation in the
// upper half, so they can never collide with it.
constexpr uint64_t kWakeKey = 0;

// A slot's word: [epoch:32][kgen:24][flags:5][state:3]. kgen is the
// generation in the key of the slot's kernel registration; the epoch is
// that of its latest watch (the WatchId's upper half).
constexpr uint64_t kStateMask = 7;
constexpr uint64_t kInKernel = 1u << 3;    // the registration is armed and has not fired
constexpr uint64_t kRdhup = 1u << 4;       // it asks for EPOLLRDHUP
constexpr uint64_t kHupIsClose = 1u << 5;  // kTunnel: HUP without ERR is an orderly close
constexpr unsigned kGenShift = 8;
constexpr uint64_t kGenMask = 0xffffff;
constexpr unsigned kEpochShift = 32;

uint64_t state_of(uint64_t w) {
    return w & kStateMask;
}
uint32_t kgen_of(uint64_t w) {
    return static_cast<uint32_t>((w >> kGenShift) & kGenMask);
}
uint32_t epoch_of(uint64_t w) {
    return static_cast<uint32_t>(w >> kEpochShift);
}
uint64_t with_state(uint64_t w, uint64_t state) {
    return (w & ~kStateMask) | state;
}
uint64_t make_word(uint64_t state, uint64_t flags, uint32_t kgen, uint32_t epoch) {
    return state | flags | (uint64_t{kgen} << kGenShift) | (uint64_t{epoch} << kEpochShift);
}

uint64_t make_key(uint32_t slot, uint32_t gen) {
    return (uint64_t{gen} << 32) | slot;
}
uint32_t key_slot(uint64_t key) {
    return static_cast<uint32_t>(key);
}
uint32_t key_gen(uint64_t key) {
    return static_cast<uint32_t>(key >> 32);
}

// Generations and epochs skip 0: a zero key is the eventfd's, a zero
// WatchId is "none".
uint32_t next_kgen(uint32_t gen) {
    return (gen + 1) & kGenMask ? (gen + 1) & kGenMask : 1;
}
uint32_t next_epoch(uint32_t epoch) {
    return epoch + 1 == 0 ? 1 : epoch + 1;
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
    for (auto& chunk : chunks_)
        delete[] chunk.load(std::memory_order_acquire);
}

bool Monitor::stop(int64_t bound_ns) noexcept {
    if (joined_ || !thread_.joinable())
        return true;
    stopping_.store(true, std::memory_order_release);
    wake();
    // Poll instead of waiting on a condition: no lock, signal-safe calls only.
    const int64_t deadline = deadline_after(bound_ns);
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

Monitor::Slot* Monitor::slot(uint32_t fd, bool create) noexcept {
    const size_t c = fd >> kChunkBits;
    if (c >= kChunks)
        return nullptr;
    Slot* base = chunks_[c].load(std::memory_order_acquire);
    if (base == nullptr && create) {
        Slot* fresh = new (std::nothrow) Slot[size_t{1} << kChunkBits];
        if (fresh == nullptr)
            return nullptr;
        if (chunks_[c].compare_exchange_strong(base, fresh, std::memory_order_acq_rel))
            base = fresh;
        else
            delete[] fresh;  // another watch made it first; `base` is theirs
    }
    return base != nullptr ? base + (fd & ((1u << kChunkBits) - 1)) : nullptr;
}

Status Monitor::watch(int fd, unsigned flags, Token* token, AbortFn fn, void* arg, WatchId* id) {
    if (fd < 0)
        return Status::from_errno(EBADF, "watch");
    if (stopping_.load(std::memory_order_acquire) || retired_.load(std::memory_order_acquire))
        return Status::from_errno(ECANCELED, "monitor stopped");
    Slot* s = slot(static_cast<uint32_t>(fd), true);
    if (s == nullptr) {
        return static_cast<uint32_t>(fd) >> kChunkBits >= kChunks
                   ? Status::from_errno(ERANGE, "fd beyond the watch table")
                   : Status::from_errno(ENOMEM, "growing the watch table");
    }
    // Claim the slot: only its owner gets past this, so the fields below
    // are written by one thread, and the monitor ignores a kClaimed slot.
    uint64_t w = s->word.load(std::memory_order_acquire);
    uint64_t claimed;
    do {
        if (state_of(w) != kUnused && state_of(w) != kParked)
            return Status::from_errno(EBUSY, "the socket is already watched");
        claimed = with_state(w, kClaimed);
    } while (!s->word.compare_exchange_weak(w, claimed, std::memory_order_acquire));
    s->token.store(token, std::memory_order_relaxed);
    s->fn.store(fn, std::memory_order_relaxed);
    s->arg.store(arg, std::memory_order_relaxed);
    return take_over_or_arm(fd, flags, state_of(w) == kParked, s, claimed, id);
}

// The slot is kClaimed by the caller. Publishes kArmed (release: the fields
// are visible to the monitor once it sees the state).
Status Monitor::take_over_or_arm(int fd, unsigned flags, bool parked, Slot* s, uint64_t claimed,
                                 WatchId* id) {
    const uint64_t rdhup = (flags & kIgnoreHalfClose) ? 0 : kRdhup;
    const uint64_t tunnel = (flags & kTunnel) ? kHupIsClose : 0;
    const uint32_t epoch = next_epoch(epoch_of(claimed));
    *id = make_key(static_cast<uint32_t>(fd), epoch);
    live_.fetch_add(1, std::memory_order_relaxed);
    // The same connection's next request, and its registration never
    // fired: still armed in the kernel for exactly this socket. If the
    // monitor sees it fire meanwhile (it clears kInKernel), this fails and
    // the registration is re-armed below.
    if ((flags & kSameSocket) && parked && (claimed & kInKernel) && (claimed & kRdhup) == rdhup) {
        uint64_t expected = claimed;
        if (s->word.compare_exchange_strong(
                expected, make_word(kArmed, kInKernel | rdhup | tunnel, kgen_of(claimed), epoch),
                std::memory_order_release, std::memory_order_acquire))
            return Status::ok();
        claimed = expected;  // still kClaimed, only kInKernel cleared
    }
    // A new kernel generation, published before the kernel can report an
    // event with it: an event of the old one is dropped from now on (it
    // fired for a registration this watch re-arms or replaces).
    const uint32_t kgen = next_kgen(kgen_of(claimed));
    s->word.store(make_word(kArmed, kInKernel | rdhup | tunnel, kgen, epoch),
                  std::memory_order_release);
    struct epoll_event ev = {};
    ev.events = EPOLLONESHOT | (rdhup ? uint32_t{EPOLLRDHUP} : 0u);
    ev.data.u64 = make_key(static_cast<uint32_t>(fd), kgen);
    Status st = arm(fd, parked, flags, &ev);
    if (!st.is_ok()) {
        // Nothing in the kernel carries `kgen`, so the monitor cannot have
        // moved the slot on: park it, unarmed.
        s->word.store(make_word(kParked, 0, kgen, epoch), std::memory_order_release);
        live_.fetch_sub(1, std::memory_order_relaxed);
        *id = 0;
    }
    return st;
}

// No syscall: the registration stays in the epoll set, parked, so that the
// connection's next request can take it over as it is, or re-arm it with one
// MOD if it fired meanwhile. When the socket is closed, the kernel removes
// the registration itself.
void Monitor::unwatch(WatchId id) noexcept {
    Slot* s = slot(key_slot(id));
    if (s == nullptr)
        return;
    uint64_t w = s->word.load(std::memory_order_acquire);
    for (;;) {
        if (epoch_of(w) != key_gen(id))
            return;  // an older watch's id
        const uint64_t st = state_of(w);
        if (st != kArmed && st != kFiring && st != kFired)
            return;  // already removed
        if (st == kFiring) {
            wait_fired(s, w);  // the callback may be running: wait it out
            w = s->word.load(std::memory_order_acquire);
            continue;
        }
        if (s->word.compare_exchange_weak(w, with_state(w, kParked), std::memory_order_acq_rel)) {
            live_.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
    }
}

// Sleeps until the monitor bumps the slot's fired_seq after `firing` left
// kFiring. The sequence is read before the state is re-checked, so a bump
// between the two makes the futex wait return at once.
void Monitor::wait_fired(Slot* s, uint64_t firing) noexcept {
    s->fired_waiters.fetch_add(1, std::memory_order_seq_cst);
    for (;;) {
        const uint32_t seq = s->fired_seq.load(std::memory_order_seq_cst);
        if (s->word.load(std::memory_order_seq_cst) != firing)
            break;
        futex_wait_until(&s->fired_seq, seq, INT64_MAX / 2);
    }
    s->fired_waiters.fetch_sub(1, std::memory_order_seq_cst);
}

size_t Monitor::watch_count() const noexcept {
    return live_.load(std::memory_order_relaxed);
}

// Phase one of a batch: the events whose watch is still armed pin their
// slot (kFiring: unwatch() waits, so fd, token and arg stay valid) and are
// copied out. Every event of a slot's current generation clears kInKernel:
// the one-shot registration is disabled in the kernel.
int Monitor::select_fired(const struct epoll_event* events, int n, Firing* out) noexcept {
    int nf = 0;
    for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        Slot* s = key == kWakeKey ? nullptr : slot(key_slot(key));
        if (s == nullptr)
            continue;
        uint64_t w = s->word.load(std::memory_order_acquire);
        for (;;) {
            if (kgen_of(w) != key_gen(key) || !(w & kInKernel))
                break;  // a registration this slot no longer uses
            const bool fire = state_of(w) == kArmed;
            const uint64_t next = (fire ? with_state(w, kFiring) : w) & ~kInKernel;
            if (!s->word.compare_exchange_weak(w, next, std::memory_order_acq_rel))
                continue;
            if (fire) {
                out[nf++] = Firing{s,
                                   key_slot(key),
                                   events[i].events,
                                   s->token.load(std::memory_order_relaxed),
                                   s->fn.load(std::memory_order_relaxed),
                                   s->arg.load(std::memory_order_relaxed),
                                   (w & kHupIsClose) != 0,
                                   false};
            }
            break;
        }
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
        const int fd = static_cast<int>(f.fd);
        const Reason reason = f.hup_is_close ? classify_tunnel_event(f.events, fd)
                                             : classify_socket_event(f.events, fd);
        if (reason == Reason::kNone) {
            AG_LOG(kDebug, "AG0110: tunnel socket %d closed in order (events 0x%x)", fd, f.events);
            continue;
        }
        const int64_t now = mono_ns();
        f.first = f.token->claim(reason, now);
        if (f.first)
            stats::record(stats::Latency::kDetection, now - woke_ns);
        AG_LOG(kDebug, "AG0101: client socket %d closed (%s, events 0x%x)", fd, reason_name(reason),
               f.events);
        if (f.first && f.fn != nullptr)
            f.fn(f.arg, static_cast<int>(reason));
    }
    // The effects on other processes first (a proxied request's backend is
    // cut by a callback), then the bookkeeping, then the waiting handlers,
    // each slot released right after its waiters are woken. A woken handler
    // soon ends its request and unwatches; were the slots released only
    // after the whole batch's wake-ups, each such handler would sleep in
    // unwatch() until then and be woken again, and every release would wake
    // all of them to look (scheduler traces of 100 aborts at once showed
    // exactly that, on the CPUs the later wake-ups waited for).
    for (int i = 0; i < nf; ++i) {
        if (fired[i].first)
            fired[i].token->run_callbacks();
    }
    for (int i = 0; i < nf; ++i) {
        if (fired[i].first)
            fired[i].token->tell_owner();
    }
    for (int i = 0; i < nf; ++i) {
        if (fired[i].first)
            fired[i].token->wake_waiters();
        finish_firing(fired[i].slot);
    }
}

// kFiring -> kFired; wakes an unwatch() waiting for it. Nobody else changes
// a kFiring word (the owner waits, and select_fired() needs kInKernel,
// which it cleared), so a plain store suffices.
void Monitor::finish_firing(Slot* s) noexcept {
    const uint64_t w = s->word.load(std::memory_order_relaxed);
    s->word.store(with_state(w, kFired), std::memory_order_seq_cst);
    s->fired_seq.fetch_add(1, std::memory_order_seq_cst);
    if (s->fired_waiters.load(std::memory_order_seq_cst) != 0)
        futex_wake_all(&s->fired_seq);
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
    t_monitor_thread = true;
    tid_.store(static_cast<uint32_t>(syscall(SYS_gettid)), std::memory_order_release);
    futex_wake_all(&tid_);
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

Status Monitor::set_nice(int nice) noexcept {
    // The thread records its id first thing; create() has just started it.
    const int64_t deadline = mono_ns() + 1000000000;
    uint32_t tid;
    while ((tid = tid_.load(std::memory_order_acquire)) == 0) {
        if (mono_ns() >= deadline)
            return Status::from_errno(ESRCH, "the monitor thread did not start");
        futex_wait_until(&tid_, 0, deadline);
    }
    return set_thread_priority(static_cast<pid_t>(tid), nice);
}

bool Monitor::on_a_monitor_thread() noexcept {
    return t_monitor_thread;
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
