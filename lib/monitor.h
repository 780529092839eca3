// Monitor: one thread and one epoll set per process that notices, the moment
// the kernel does, that a watched client socket was closed or reset.
//
// It asks epoll for EPOLLRDHUP (peer sent FIN) and gets EPOLLHUP/EPOLLERR
// (reset, timeout, error) implicitly; it never asks for EPOLLIN, so request
// bodies, pipelined requests and TLS records never wake it, and it never
// reads from a socket. Every watch is one-shot: it fires at most once.
//
// Safety property (the reason this class exists as it does): once unwatch()
// returns, no callback for that watch is running or will ever run, and the
// monitor never touches that fd number again. The kernel reuses fd numbers
// within microseconds; acting on a stale one would hit another connection.
// Events carry a (slot, generation) id, never a pointer, and a stale id is
// dropped. The monitor thread touches only its own slot table
// and the Token it was handed (which must outlive the watch); it makes no
// epoll_ctl call of its own.
//
// Cost: unwatch() makes no syscall. The epoll registration stays, parked;
// the connection's next request takes it over as it is (kSameSocket, no
// syscall) or re-arms it with one MOD if it fired meanwhile; a new socket is
// ADDed (if a closed socket's number is reused, the kernel has dropped the
// old registration and MOD falls back to ADD). Events carry the key's kernel
// generation; WatchIds carry a per-watch epoch.
//
// Thread contract:
//  - create(): any thread; the monitor thread starts with every signal
//    blocked, so process-directed signals are never handled on it.
//  - watch()/unwatch(): any thread except the monitor thread itself (an
//    AbortFn must not call them: unwatch() would wait for itself).
//  - AbortFn callbacks run on the monitor thread, one at a time, after the
//    token was aborted. They must be short and must not block; `arg` is valid
//    until unwatch() returns, by the caller's contract.
//  - stop(): by the owner, once; takes no lock and only uses async-signal-
//    safe calls until the thread has exited, so it may run from the exit
//    path of a process that was interrupted while holding the monitor's lock
//    (httpd's prefork children exit from a signal handler).
#ifndef ABORTGUARD_MONITOR_H
#define ABORTGUARD_MONITOR_H

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "reason.h"
#include "status.h"
#include "timer_queue.h"
#include "token.h"

struct epoll_event;

namespace abortguard {

class Monitor {
  public:
    // `reason` is a Reason value, passed as int so C callbacks fit exactly.
    using AbortFn = void (*)(void* arg, int reason);
    // (epoch << 32 | fd); 0 is never a valid id.
    using WatchId = uint64_t;

    enum WatchFlags : unsigned {
        // A FIN alone is not an abort (RST and errors still are).
        kIgnoreHalfClose = 1u << 0,
        // A hint: the socket was never watched before (a new connection),
        // so registering it takes one syscall, not two.
        kFreshSocket = 1u << 1,
        // The previous watch of this fd was on this very socket, which has
        // stayed open since (the same connection's next request): if that
        // registration never fired it is taken over without a syscall.
        // Wrong use misses events, so only pass it when it is certain.
        kSameSocket = 1u << 2,
        // The socket carries a tunnel (WebSocket, CONNECT), whose owner
        // shuts our sending side down when the far end's direction ends: a
        // HUP without an error is then an orderly close of both directions,
        // not an abort. Use with kIgnoreHalfClose.
        kTunnel = 1u << 3,
    };

    // Creates the epoll set and starts the monitor thread.
    static Status create(std::unique_ptr<Monitor>* out);

    // Stops the thread (unbounded) and closes the descriptors. Only for an
    // owner that knows no watch is live and no thread still uses it.
    ~Monitor();

    Monitor(const Monitor&) = delete;
    Monitor& operator=(const Monitor&) = delete;

    // Watches `fd` until unwatch(). On a close/reset/error event the monitor
    // aborts `token` (first reason wins) and, if that aborted it, calls
    // fn(arg, reason) on the monitor thread. If the condition already holds
    // when watch() is called, it fires at once. `fd` must stay open until
    // unwatch() returns; one fd may have only one watch at a time (EBUSY).
    Status watch(int fd, unsigned flags, Token* token, AbortFn fn, void* arg, WatchId* id);

    // Removes the watch; synchronous (see the safety property above).
    // Unknown or already removed ids are ignored.
    void unwatch(WatchId id) noexcept;

    // Asks the thread to exit and waits for it at most `bound_ns`. Returns
    // true once it has exited and was joined. After stop(), watch() fails
    // and unwatch() still works.
    bool stop(int64_t bound_ns) noexcept;

    size_t watch_count() const noexcept;

    // Timers run on the monitor thread (see timer_queue.h for the thread
    // contract); they let the core act later without a thread of its own:
    // grace periods, polling a flag that has no file descriptor. The
    // callback must be short and must not block.
    using TimerFn = TimerQueue::Fn;
    using TimerId = TimerQueue::Id;
    Status add_timer(int64_t deadline_ns, TimerFn fn, void* arg, TimerId* id);
    // Synchronous, as unwatch(); harmless for a timer that already ran.
    void cancel_timer(TimerId id) noexcept;

    // Work requested from contexts that may neither lock nor allocate (a
    // signal handler, a process's exit path): post() sets bits and wakes the
    // thread, which then calls the post handler once with every bit posted
    // since its previous call, after that round's events and timers.
    using PostFn = void (*)(void* arg, uint32_t bits);
    // By the owner (never from the monitor thread), before the first post()
    // that must be seen; bits posted while no handler is set wait for one.
    // Clearing it (fn nullptr) waits for a handler call in progress.
    void set_post_handler(PostFn fn, void* arg) noexcept;
    // Async-signal-safe: one atomic OR and one write(2) to an eventfd.
    void post(uint32_t bits) noexcept;

    // From now on watch() fails (ECANCELED) but the thread keeps running
    // its timers and posted work until the process exits: the owner keeps
    // an always-responsive thread through its own teardown. Async-signal-
    // safe; unwatch() still works.
    void retire() noexcept;

    // Whether the caller is the monitor thread.
    bool on_monitor_thread() const noexcept;
    // Whether the caller is any Monitor's thread (an abort callback or a
    // timer running): code that may be called from there must not block.
    static bool on_a_monitor_thread() noexcept;

    // Sets the monitor thread's nice value and asks for the scheduler's
    // shortest slice (set_thread_priority): a negative nice value lets it run
    // before the request threads it wakes, so that detection keeps up when
    // many clients leave at once; the short slice lets it preempt, when a
    // client's close wakes it, the thread that was running on that CPU (on
    // Linux's EEVDF scheduler a nice value alone does not). Raising the
    // priority takes CAP_SYS_NICE or room in RLIMIT_NICE (EACCES/EPERM
    // otherwise; the slice is set all the same). By the owner, any time after
    // create().
    Status set_nice(int nice) noexcept;

  private:
    // Slots are indexed by fd number, in chunks that are allocated on first
    // use and never move, so that no lock guards the table: the monitor
    // thread must never wait for a request thread (one preempted while
    // holding a lock would delay every abort behind it).
    //
    // A slot's state, its kernel registration's generation and its latest
    // watch's epoch share one atomic word, changed only by compare-and-swap:
    // the owner (watch/unwatch, one thread per open fd) and the monitor
    // (events) never act on a state the other has moved on from.
    //   kUnused -> kClaimed (the owner is setting a watch up) -> kArmed
    //   kArmed -> kFiring (the monitor runs the abort) -> kFired
    //   kArmed / kFired -> kParked (unwatch; the registration is kept for the
    //   connection's next request); kParked -> kClaimed -> ...
    enum SlotState : uint64_t { kUnused, kParked, kClaimed, kArmed, kFiring, kFired };
    struct Slot {
        // [epoch:32][kgen:24][flags:5][state:3]; see monitor.cc.
        std::atomic<uint64_t> word{0};
        // Written by the owner before it publishes kArmed (release), read
        // by the monitor after it took kArmed -> kFiring (acquire).
        std::atomic<Token*> token{nullptr};
        std::atomic<AbortFn> fn{nullptr};
        std::atomic<void*> arg{nullptr};
        // unwatch() waiting out a firing sleeps on fired_seq, which the
        // monitor bumps when this slot leaves kFiring: a release wakes only
        // the owner of that slot, not every owner waiting on another one.
        std::atomic<uint32_t> fired_seq{0};
        std::atomic<uint32_t> fired_waiters{0};
    };
    static constexpr unsigned kChunkBits = 10;
    static constexpr size_t kChunks = 1024;  // fds below 1,048,576

    // Events taken from the kernel at once; the monitor's stack holds one
    // Firing per event.
    static constexpr int kBatch = 256;
    struct Firing {
        Slot* slot;
        uint32_t fd;
        uint32_t events;  // what epoll reported
        Token* token;
        AbortFn fn;
        void* arg;
        bool hup_is_close;  // kTunnel
        bool first;         // this event aborted the token
    };

    Monitor(int epfd, int wakefd) noexcept : epfd_(epfd), wakefd_(wakefd) {}

    void run() noexcept;
    // `woke_ns`: when epoll_wait returned the batch.
    void dispatch(const struct epoll_event* events, int n, int64_t woke_ns) noexcept;
    int select_fired(const struct epoll_event* events, int n, Firing* out) noexcept;
    void finish_firing(Slot* s) noexcept;
    // The slot of `fd`; nullptr if its chunk does not exist (or, with
    // `create`, cannot be made) or the fd is beyond the table.
    Slot* slot(uint32_t fd, bool create = false) noexcept;
    Status take_over_or_arm(int fd, unsigned flags, bool parked, Slot* s, uint64_t claimed,
                            WatchId* id);
    Status arm(int fd, bool parked, unsigned flags, struct epoll_event* ev);
    void wait_fired(Slot* s, uint64_t firing) noexcept;
    int wait_ms() const;
    void wake() noexcept;  // async-signal-safe

    const int epfd_;
    const int wakefd_;
    std::thread thread_;
    // The monitor thread's id once it runs (a futex word: set_nice() waits).
    std::atomic<uint32_t> tid_{0};
    bool joined_ = false;  // owner-only
    std::atomic<bool> stopping_{false};
    std::atomic<bool> exited_{false};
    std::atomic<bool> retired_{false};
    std::atomic<uint32_t> posted_{0};
    std::atomic<void*> post_arg_{nullptr};
    std::atomic<PostFn> post_fn_{nullptr};
    std::atomic<bool> in_post_{false};

    std::atomic<Slot*> chunks_[kChunks] = {};
    std::atomic<size_t> live_{0};

    TimerQueue timers_;
};

}  // namespace abortguard

#endif  // ABORTGUARD_MONITOR_H
