// Lifecycle: what one child process does when it stops, and the bounds that
// keep a hung handler, a hung cleanup or an idle connection from keeping the
// child (and its locks, memory and old configuration) alive.
//
//  - Stop notice. notify_stop() (the MPM's child_stopping, or prefork's
//    graceful signal) makes the monitor thread give every in-flight request
//    the stop notice (Token::stop(); with RequestState::kStopAborts an abort
//    with reason server-stop instead), give it at once to requests created
//    later, and shut down the idle keep-alive connections of the ConnTable.
//  - Grace period. When a request is aborted, a monitor timer is armed for
//    `grace_ns` later; the start of the request's cleanups cancels it (the
//    grace period measures the handler, never its cleanups). If it fires,
//    the handler is still running for a client that left: it is logged once
//    at warn (from the in-flight table: URI, handler, time since the abort,
//    locks held).
//  - Terminate (`grace_terminate`): release, drain, then exit. The monitor
//    thread runs the hung request's abort-selected cleanups and releases its
//    file locks at once. Then the child drains: the owner is told
//    (on_drain: stop taking new work as far as the server lets it), idle
//    keep-alive connections are shut down, and every other request that
//    was in flight at that moment may finish, within `exit_timeout_ns` (30 s
//    when that is off). Requests still running then are named at warn, one
//    line each, their abort-selected cleanups run, and they are counted;
//    then the process ends (exit_fn, _exit by default) and the parent
//    replaces it. A terminate needs permission: the child must have run for
//    `terminate_interval_ns`, and the server-wide `permit` (one per interval
//    across all children) must agree -- otherwise it is only logged, so that
//    clients cannot end children at will.
//  - Exit bound. Once the child's exit has begun (notify_exit(): the child
//    pool's teardown; or an ungraceful stop), it has `exit_timeout_ns` to
//    finish; and in a stopping child a request whose cleanups run longer
//    than that counts as a hang too. Past it the monitor thread logs what
//    the child was still waiting for and ends the process.
//
// The monitor thread is the one thread that stays responsive whatever the
// request threads do, so all of this runs there: signal-handler contexts
// only post() to it. If the monitor thread itself is stuck (a cleanup it
// runs for `terminate` hangs), a kernel timer armed beforehand kills the
// process with SIGKILL (`kill_backstop`), which httpd's parent does not log.
//
// What the monitor thread does to a request that is still running on its
// own thread (terminate), and what it does not:
//  - It runs the request's cleanups selected for an abort (each exactly once,
//    as the registry guarantees: one the request thread already started is
//    not run again). They run concurrently with the hung handler; what they
//    may touch is the cleanup author's contract (see mod_abortguard.h).
//  - It releases the request's file locks (OFD locks: the core owns their
//    descriptors; releasing is close(2) under the state's mutex, and a later
//    unlock by the handler is harmless).
//  - It never touches the request's memory (request_rec, pools, filters,
//    connection), never unlocks mutexes that belong to the handler's thread
//    (std::mutex, APR thread mutexes: unlocking from another thread is
//    undefined), and never runs destructors on the handler's stack. Those go
//    with the process.
//
// The lifecycle learns of requests as their RequestObserver: the glue
// creates each request's state with it (nothing global connects the two).
//
// Thread contract: create/destroy by the owner (child_init, child exit;
// tests); it must outlive the states it observes. notify_stop(),
// notify_exit(), note_child_cleanup() and stopping() are async-signal-safe
// (atomics and Monitor::post()). The RequestObserver functions run as that
// interface says. Everything else runs on the monitor thread.
#ifndef ABORTGUARD_LIFECYCLE_H
#define ABORTGUARD_LIFECYCLE_H

#include <signal.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "conn_table.h"
#include "monitor.h"
#include "request_observer.h"
#include "status.h"

namespace abortguard {

class RequestState;

class Lifecycle final : public RequestObserver {
  public:
    static constexpr int64_t kSecond = 1000000000;

    // The server-wide bound on terminations (shared memory in httpd): true
    // to permit one at `now_ns`. Any thread; must not block.
    using PermitFn = bool (*)(void* arg, int64_t now_ns, int64_t interval_ns);
    // The owner's part of a drain (httpd: the scoreboard says the child is
    // quiescing). Monitor thread; must not block.
    using DrainFn = void (*)(void* arg);

    struct Config {
        int64_t grace_ns = 30 * kSecond;  // <= 0: no grace timer
        bool grace_terminate = false;
        int64_t exit_timeout_ns = 5 * kSecond;  // <= 0: no exit bound
        size_t conn_capacity = 0;               // 0: connections not tracked
        bool kill_backstop = true;              // tests turn it off
        int64_t terminate_interval_ns = 10 * kSecond;
        PermitFn permit = nullptr;  // nullptr: no server-wide bound
        void* permit_arg = nullptr;
        DrainFn on_drain = nullptr;
        void* drain_arg = nullptr;
    };
    // The drain's bound when exit_timeout_ns is off.
    static constexpr int64_t kDefaultDrainNs = 30 * kSecond;
    // At most this many requests are named one line each when a child cuts
    // them at its exit; the rest are counted in one more line.
    static constexpr int kNamedAtExit = 20;
    // Ends the process (status 0: httpd's parent replaces the child).
    using ExitFn = void (*)(int status);

    // `monitor` must outlive the lifecycle; the lifecycle takes over its
    // post handler.
    static Status create(Monitor* monitor, const Config& config, std::unique_ptr<Lifecycle>* out);
    ~Lifecycle();
    Lifecycle(const Lifecycle&) = delete;
    Lifecycle& operator=(const Lifecycle&) = delete;

    // Async-signal-safe.
    void notify_stop(bool graceful) noexcept;
    void notify_exit() noexcept;
    // The owner's own child-exit cleanup has run (a report then says the
    // hang is elsewhere).
    void note_child_cleanup() noexcept { child_cleanup_ran_.store(true); }
    bool stopping() const noexcept { return stop_ns_.load(std::memory_order_acquire) != 0; }
    // A terminate began the drain: the child takes no new work. Any thread.
    bool draining() const noexcept { return drain_ns_.load(std::memory_order_acquire) != 0; }
    bool exit_begun() const noexcept { return exit_ns_.load(std::memory_order_acquire) != 0; }
    const Config& config() const noexcept { return config_; }

    // nullptr when connections are not tracked.
    ConnTable* conns() noexcept { return conns_.get(); }

    // Tests replace the process exit.
    void set_exit_fn(ExitFn fn) noexcept { exit_fn_.store(fn); }

    // True on the monitor thread while a `terminate` grace action runs the
    // request's cleanups (the C API tells its cleanups so).
    static bool in_terminate() noexcept;

    // RequestObserver: a state that begins in a stopping child gets the stop
    // notice at once; an aborted one a grace timer (when grace_ns is set).
    void state_created(RequestState* state) noexcept override;
    uint64_t arm_grace_timer(RequestState* state) noexcept override;
    void cancel_grace_timer(uint64_t timer) noexcept override;

  private:
    enum : uint32_t { kPostStop = 1, kPostUngraceful = 2, kPostExit = 4 };

    Lifecycle(Monitor* monitor, const Config& config);

    static void on_post(void* self, uint32_t bits);
    static void grace_fired(void* state);
    static void scan_fired(void* self);

    void deliver(RequestState* state, int64_t now) noexcept;
    void grace_expired(RequestState* state) noexcept;
    bool permitted(int64_t now) noexcept;
    void terminate(RequestState* state) noexcept;
    void give_up_on(RequestState* state) noexcept;
    void begin_drain() noexcept;
    static void drain_check(void* self);
    int drain_remaining() const noexcept;
    void cut_and_exit() noexcept;
    void ensure_scan() noexcept;
    void give_up(const char* why) noexcept;
    void arm_backstop(int64_t in_ns) noexcept;
    void end_process() noexcept;

    Monitor* const monitor_;
    const Config config_;
    const int64_t born_ns_;
    std::unique_ptr<ConnTable> conns_;
    std::atomic<ExitFn> exit_fn_;

    std::atomic<int64_t> stop_ns_{0};  // the stop notice came (CLOCK_MONOTONIC)
    std::atomic<int64_t> exit_ns_{0};  // the exit began
    std::atomic<bool> child_cleanup_ran_{false};
    std::atomic<bool> gave_up_{false};

    std::atomic<int64_t> drain_ns_{0};  // a terminate began the drain

    // Monitor thread only (and the destructor, once it stopped them).
    bool delivered_ = false;
    uint64_t drain_serial_ = 0;  // the drain waits for requests up to this one
    std::atomic<uint64_t> drain_timer_{0};
    std::atomic<uint64_t> scan_timer_{0};
    std::atomic<bool> closing_{false};

    bool have_backstop_ = false;
    timer_t backstop_{};
    std::atomic<bool> backstop_armed_{false};
};

}  // namespace abortguard

#endif  // ABORTGUARD_LIFECYCLE_H
