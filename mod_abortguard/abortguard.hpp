// mod_abortguard for C++ handler authors: a cancellation handle per request
// and a handler wrapper that keeps every exception away from httpd.
//
// Header-only, over the optional functions of mod_abortguard.h, so a module
// that uses it needs no link to mod_abortguard; when mod_abortguard is not
// loaded, aborted() falls back to r->connection->aborted (failed writes) and
// registrations report false.
//
//     static int my_handler(request_rec* r) {
//         if (strcmp(r->handler, "my-handler")) return DECLINED;
//         return abortguard::run_handler(r, [](abortguard::Request& req) {
//             auto tx = std::make_shared<Transaction>(begin());  // outlives the handler
//             req.on_cleanup([tx](bool aborted) {  // once; commits only finished work
//                 tx->finished() && !aborted ? tx->commit() : tx->rollback();
//             });
//             for (auto& step : work) {
//                 req.throw_if_aborted();       // ends the request quietly
//                 tx->apply(step);              // a throw: a logged 500, rolled back
//             }
//             tx->finish();
//             return OK;
//         });
//     }
//
// Threads: construct a Request and call its members on the request's thread.
// aborted() and wait_for() may also be called from threads the handler
// started, until the handler returns. on_abort() callbacks run on the monitor
// thread (see there).
#ifndef ABORTGUARD_HPP
#define ABORTGUARD_HPP

#include <algorithm>
#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include "httpd.h"
#include "http_log.h"
#include "apr_global_mutex.h"
#include "apr_proc_mutex.h"
#include "mod_abortguard.h"

namespace abortguard {

// When a cleanup runs: the values of ABORTGUARD_ON_ABORT and friends.
enum class When : int {
    kOnAbort = ABORTGUARD_ON_ABORT,
    kOnSuccess = ABORTGUARD_ON_SUCCESS,
    kAlways = ABORTGUARD_ALWAYS,
};

// How a request ended, for a cleanup that needs to tell the terminate case
// apart (see Request::on_cleanup).
enum class Outcome : int {
    kSuccess = 0,
    kAborted = 1,
    // AbortGuardGraceAction terminate gave up on the hung handler: the
    // cleanup runs on the monitor thread while the handler still runs, and
    // must not touch the request (ABORTGUARD_ABORTED_TERMINATING).
    kTerminating = ABORTGUARD_ABORTED_TERMINATING,
};

// Thrown by Request::throw_if_aborted(); run_handler() turns it into a quiet
// end of the request (the access log says aborted).
class ClientAborted : public std::runtime_error {
  public:
    ClientAborted() : std::runtime_error("the client went away") {}
};

namespace detail {

// Holds a callable in a request pool; the pool destroys it, whether or not
// it ever ran, so nothing leaks when a cleanup is not selected.
template <class F>
struct PoolHolder {
    F fn;
    static apr_status_t destroy(void* p) {
        static_cast<PoolHolder*>(p)->~PoolHolder();
        return APR_SUCCESS;
    }
    template <class G>
    static PoolHolder* make(apr_pool_t* pool, G&& g) {
        void* mem = apr_palloc(pool, sizeof(PoolHolder));
        auto* h = new (mem) PoolHolder{F(std::forward<G>(g))};
        apr_pool_cleanup_register(pool, h, destroy, apr_pool_cleanup_null);
        return h;
    }
};

// A duration as APR microseconds, saturating: duration::max() (or any
// duration beyond APR's range) must not wrap into a negative timeout.
template <class Rep, class Period>
apr_interval_time_t to_apr_us(std::chrono::duration<Rep, Period> d) noexcept {
    const long double us =
        std::chrono::duration_cast<std::chrono::duration<long double, std::micro>>(d).count();
    if (us >= static_cast<long double>(APR_INT64_MAX))
        return APR_INT64_MAX;
    if (us <= static_cast<long double>(APR_INT64_MIN))
        return APR_INT64_MIN;
    return static_cast<apr_interval_time_t>(us);
}

// The pool that lives as long as mod_abortguard's record of the request:
// the main request's (a subrequest's pool is gone long before the main
// request's cleanups run; internal redirects share their pool).
inline apr_pool_t* request_pool(request_rec* r) noexcept {
    while (r->main != nullptr)
        r = r->main;
    return r->pool;
}

// An exception must not unwind into mod_abortguard's C code.
// Without `r` (a cleanup the monitor thread runs): on the main server.
inline void log_escaped(request_rec* r, const char* what, const char* text) noexcept {
    ap_log_error_(__FILE__, __LINE__, APLOG_NO_MODULE, APLOG_ERR, 0,
                  r != nullptr ? r->server : nullptr, "AG0411: %s threw: %s (%s)", what, text,
                  r != nullptr && r->uri != nullptr ? r->uri : "-");
}

template <class F>
void guarded(request_rec* r, const char* what, F&& f) noexcept {
    try {
        f();
    } catch (const std::exception& e) {
        log_escaped(r, what, e.what());
    } catch (...) {
        log_escaped(r, what, "a non-standard exception");
    }
}

}  // namespace detail

// One request's view of mod_abortguard. Cheap to construct (it looks up the
// optional functions); construct it where you need it.
class Request {
  public:
    explicit Request(request_rec* r) noexcept
        : r_(r),
          aborted_(APR_RETRIEVE_OPTIONAL_FN(abortguard_aborted)),
          wait_(APR_RETRIEVE_OPTIONAL_FN(abortguard_wait)),
          probe_(APR_RETRIEVE_OPTIONAL_FN(abortguard_probe)),
          stopping_(APR_RETRIEVE_OPTIONAL_FN(abortguard_stopping)) {}

    request_rec* get() const noexcept { return r_; }
    // Whether mod_abortguard is loaded.
    bool available() const noexcept { return aborted_ != nullptr; }

    // Whether the client went away. No syscall; fine in a tight loop.
    bool aborted() const noexcept {
        return aborted_ != nullptr ? aborted_(r_) != 0 : r_->connection->aborted != 0;
    }

    void throw_if_aborted() const {
        if (aborted())
            throw ClientAborted();
    }

    // Whether the child process is stopping (the stop notice: graceful
    // restart or stop); the handler should finish its response soon. Not an
    // abort, unless AbortGuardStopAborts On. No syscall. False when
    // mod_abortguard is not loaded.
    bool stopping() const noexcept { return stopping_ != nullptr && stopping_(r_) != 0; }

    // Sleeps up to `d` (duration::max(): until the client leaves), waking
    // at once when the client leaves, and early (once) when the stop notice
    // comes: check stopping(). Returns aborted(). After the request ended,
    // or on the monitor thread, it returns at once.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) const noexcept {
        if (wait_ == nullptr)
            return aborted();
        return wait_(r_, detail::to_apr_us(d)) == APR_ECONNABORTED;
    }

    // A synchronous check (ABORTGUARD_PROBE_SOCKET and/or _FLUSH).
    bool probe(int flags = ABORTGUARD_PROBE_SOCKET) const noexcept {
        return probe_ != nullptr ? probe_(r_, flags) != 0 : aborted();
    }

    // Runs `f(int reason)` once, on mod_abortguard's monitor thread, the
    // moment the client is seen leaving (at once if it already has). It runs
    // concurrently with the handler: it may touch only thread-safe state of
    // your own (atomics, a condition variable you notify, an eventfd); it
    // must not touch the request_rec, its pools, filters or connection, and
    // must not block. An exception it throws is logged and dropped. Returns
    // false when mod_abortguard is not loaded, out of memory, past the
    // request's bound on callbacks, or after the request ended. Call it on
    // the request's thread (`f` is kept in the request's pool).
    template <class F>
    bool on_abort(F&& f) const noexcept {
        using Holder = detail::PoolHolder<std::decay_t<F>>;
        auto* reg = APR_RETRIEVE_OPTIONAL_FN(abortguard_on_abort);
        if (reg == nullptr)
            return false;
        Holder* h = nullptr;
        detail::guarded(r_, "on_abort",
                        [&] { h = Holder::make(detail::request_pool(r_), std::forward<F>(f)); });
        return h != nullptr && reg(r_, &call_abort<Holder>, h) == APR_SUCCESS;
    }

    // Runs `f(bool aborted)` -- or `f(Outcome)`, if it takes one -- once at
    // the end of the request, newest first, when `when` selects the
    // outcome. An exception it throws is logged with the cleanup's type and
    // dropped; the other cleanups still run. Returns false when
    // mod_abortguard is not loaded, out of memory, past the request's bound
    // on cleanups, or after the request ended. Call it on the request's
    // thread (`f` is kept in the main request's pool, which outlives it).
    // Under AbortGuardGraceAction terminate, an abort-selected cleanup may
    // instead run on the monitor thread while the hung handler still runs:
    // `f(Outcome)` then gets Outcome::kTerminating and must touch only what
    // it owns (see ABORTGUARD_ABORTED_TERMINATING in mod_abortguard.h); a
    // `f(bool)` gets true.
    template <class F>
    bool on_cleanup(F&& f, When when = When::kAlways) const noexcept {
        using Holder = detail::PoolHolder<std::decay_t<F>>;
        auto* reg = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
        if (reg == nullptr)
            return false;
        Holder* h = nullptr;
        detail::guarded(r_, "on_cleanup",
                        [&] { h = Holder::make(detail::request_pool(r_), std::forward<F>(f)); });
        return h != nullptr &&
               reg(r_, &call_cleanup<Holder>, h, static_cast<int>(when)) == APR_SUCCESS;
    }

  private:
    template <class Holder>
    static void call_abort(void* data, int reason) {
        detail::guarded(nullptr, "on_abort callback",
                        [&] { static_cast<Holder*>(data)->fn(reason); });
    }
    template <class Holder>
    static void call_cleanup(request_rec* r, void* data, int aborted) {
        auto& fn = static_cast<Holder*>(data)->fn;
        // The monitor thread runs a terminating cleanup: not a word to r.
        request_rec* log_r = aborted == ABORTGUARD_ABORTED_TERMINATING ? nullptr : r;
        detail::guarded(log_r, "C++ cleanup", [&] {
            if constexpr (std::is_invocable_v<decltype(fn)&, Outcome>)
                fn(static_cast<Outcome>(aborted));
            else
                fn(aborted != 0);
        });
    }

    request_rec* r_;
    APR_OPTIONAL_FN_TYPE(abortguard_aborted) * aborted_;
    APR_OPTIONAL_FN_TYPE(abortguard_wait) * wait_;
    APR_OPTIONAL_FN_TYPE(abortguard_probe) * probe_;
    APR_OPTIONAL_FN_TYPE(abortguard_stopping) * stopping_;
};

namespace detail {

// Retries `try_once` until it succeeds, `timeout` passes or the client
// leaves; the pauses are spent in Request::wait_for, so an abort ends the
// wait at once. Returns APR_SUCCESS, APR_TIMEUP or APR_ECONNABORTED.
template <class TryOnce>
apr_status_t wait_until_acquired(const Request& req, std::chrono::microseconds timeout,
                                 TryOnce&& try_once) noexcept {
    using clock = std::chrono::steady_clock;
    const auto now0 = clock::now();
    // Saturating: a timeout past the clock's range is no deadline at all.
    const bool forever =
        timeout.count() < 0 || timeout > std::chrono::duration_cast<std::chrono::microseconds>(
                                             clock::time_point::max() - now0);
    const auto deadline = forever ? clock::time_point::max() : now0 + timeout;
    std::chrono::microseconds pause(50);
    for (;;) {
        if (try_once())
            return APR_SUCCESS;
        const auto now = clock::now();
        if (now >= deadline)
            return APR_TIMEUP;
        const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now);
        if (req.wait_for(std::min(pause, left)))
            return APR_ECONNABORTED;
        pause = std::min(pause * 2, std::chrono::microseconds(2000));
    }
}

}  // namespace detail

// A whole-file lock bound to the request (abortguard_lock_file): released by
// unlock(), by the destructor (also when an exception unwinds), and at the
// latest by mod_abortguard when the request ends. Move-only.
//
//     abortguard::FileLockGuard lock;
//     apr_status_t rv = lock.acquire(req, "/var/lib/app/db.lock",
//                                    ABORTGUARD_LOCK_EXCLUSIVE, std::chrono::seconds(5));
//     if (rv == APR_ECONNABORTED) return OK;  // the client left while we waited
class FileLockGuard {
  public:
    FileLockGuard() noexcept = default;
    ~FileLockGuard() { unlock(); }
    FileLockGuard(FileLockGuard&& o) noexcept : lock_(std::exchange(o.lock_, nullptr)) {}
    FileLockGuard& operator=(FileLockGuard&& o) noexcept {
        if (this != &o) {
            unlock();
            lock_ = std::exchange(o.lock_, nullptr);
        }
        return *this;
    }
    FileLockGuard(const FileLockGuard&) = delete;
    FileLockGuard& operator=(const FileLockGuard&) = delete;

    // `flags`: ABORTGUARD_LOCK_SHARED or ABORTGUARD_LOCK_EXCLUSIVE; a negative
    // timeout waits without limit (an abort still ends the wait). Returns
    // APR_SUCCESS, APR_TIMEUP, APR_ECONNABORTED, APR_ENOTIMPL (mod_abortguard
    // not loaded) or the status of open/lock.
    template <class Rep, class Period>
    apr_status_t acquire(const Request& req, const char* path, int flags,
                         std::chrono::duration<Rep, Period> timeout) noexcept {
        auto* lock_file = APR_RETRIEVE_OPTIONAL_FN(abortguard_lock_file);
        if (lock_file == nullptr)
            return APR_ENOTIMPL;
        unlock();
        return lock_file(req.get(), path, flags, detail::to_apr_us(timeout), &lock_);
    }

    bool held() const noexcept { return lock_ != nullptr; }

    void unlock() noexcept {
        if (lock_ == nullptr)
            return;
        if (auto* unlock_fn = APR_RETRIEVE_OPTIONAL_FN(abortguard_unlock))
            unlock_fn(lock_);
        lock_ = nullptr;
    }

  private:
    abortguard_lock_t* lock_ = nullptr;
};

// How MutexGuard drives a mutex type: std::mutex-like types by default (try_lock
// and unlock), APR's process and global mutexes by the specialisations below.
template <class M>
struct MutexTraits {
    static bool try_lock(M* m) { return m->try_lock(); }
    static void unlock(M* m) { m->unlock(); }
};
template <>
struct MutexTraits<apr_global_mutex_t> {
    static bool try_lock(apr_global_mutex_t* m) {
        return apr_global_mutex_trylock(m) == APR_SUCCESS;
    }
    static void unlock(apr_global_mutex_t* m) { apr_global_mutex_unlock(m); }
};
template <>
struct MutexTraits<apr_proc_mutex_t> {
    static bool try_lock(apr_proc_mutex_t* m) { return apr_proc_mutex_trylock(m) == APR_SUCCESS; }
    static void unlock(apr_proc_mutex_t* m) { apr_proc_mutex_unlock(m); }
};

// Holds a mutex for a request: acquisition waits until the timeout or until
// the client leaves (then: APR_ECONNABORTED, not locked); the destructor
// unlocks, also when an exception unwinds. Move-only; use it on the request's
// thread and let it end with the handler: a mutex (std::mutex, an APR
// thread or pthread-based process mutex) may only be unlocked by the thread
// that locked it.
//
// Backstop for a leaked guard: a request-pool cleanup unlocks it if the pool
// goes on the thread that locked it (always under prefork and worker; under
// event and HTTP/2 the pool may go on another thread after an asynchronous
// write). On any other thread it does not unlock -- that would be undefined
// for std::mutex and fail (EPERM) for a robust process mutex -- and logs
// AG0412 at error instead: the mutex stays locked, and the log names it.
template <class M>
class MutexGuard {
  public:
    MutexGuard() noexcept = default;
    ~MutexGuard() { unlock(); }
    MutexGuard(MutexGuard&& o) noexcept : held_(std::exchange(o.held_, nullptr)) {}
    MutexGuard& operator=(MutexGuard&& o) noexcept {
        if (this != &o) {
            unlock();
            held_ = std::exchange(o.held_, nullptr);
        }
        return *this;
    }
    MutexGuard(const MutexGuard&) = delete;
    MutexGuard& operator=(const MutexGuard&) = delete;

    // A negative timeout waits without limit (an abort still ends the wait).
    template <class Rep, class Period>
    apr_status_t acquire(const Request& req, M& mutex,
                         std::chrono::duration<Rep, Period> timeout) noexcept {
        unlock();
        const auto us = std::chrono::microseconds(detail::to_apr_us(timeout));
        const apr_status_t rv =
            detail::wait_until_acquired(req, us, [&] { return MutexTraits<M>::try_lock(&mutex); });
        if (rv != APR_SUCCESS)
            return rv;
        apr_pool_t* pool = detail::request_pool(req.get());
        held_ = static_cast<Held*>(apr_palloc(pool, sizeof(Held)));
        held_->mutex = &mutex;
        held_->owner = std::this_thread::get_id();
        held_->r = req.get();
        apr_pool_cleanup_register(pool, held_, &Held::backstop, apr_pool_cleanup_null);
        return APR_SUCCESS;
    }

    bool held() const noexcept { return held_ != nullptr && held_->mutex != nullptr; }

    void unlock() noexcept {
        if (!held())
            return;
        MutexTraits<M>::unlock(held_->mutex);
        held_->mutex = nullptr;  // the backstop finds nothing left to do
        held_ = nullptr;
    }

  private:
    // Lives in the request pool, shared by the guard and the backstop.
    struct Held {
        M* mutex;
        std::thread::id owner;  // the thread that locked it
        request_rec* r;
        static apr_status_t backstop(void* p) {
            auto* h = static_cast<Held*>(p);
            if (h->mutex == nullptr)
                return APR_SUCCESS;
            if (std::this_thread::get_id() == h->owner) {
                MutexTraits<M>::unlock(h->mutex);
            } else {
                ap_log_rerror_(__FILE__, __LINE__, APLOG_NO_MODULE, APLOG_ERR, 0, h->r,
                               "AG0412: a MutexGuard outlived its handler and its request ends "
                               "on another thread, where the mutex cannot be unlocked: it stays "
                               "locked (let the guard end with the handler)");
            }
            h->mutex = nullptr;
            return APR_SUCCESS;
        }
    };
    Held* held_ = nullptr;
};

// Runs `handler(Request&)`, which returns an httpd status (OK, DECLINED,
// HTTP_...), so that no exception reaches httpd:
//  - ClientAborted: the request ends quietly with OK (nothing more is sent;
//    the access log's ABORTGUARD_ABORTED says what happened);
//  - any other exception: logged at error with its text, 500.
template <class F>
int run_handler(request_rec* r, F&& handler) noexcept {
    Request req(r);
    try {
        return handler(req);
    } catch (const ClientAborted&) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return OK;
    } catch (const std::exception& e) {
        detail::log_escaped(r, "handler", e.what());
    } catch (...) {
        detail::log_escaped(r, "handler", "a non-standard exception");
    }
    return HTTP_INTERNAL_SERVER_ERROR;
}

}  // namespace abortguard

#endif  // ABORTGUARD_HPP
