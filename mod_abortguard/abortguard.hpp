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
//             Transaction tx = begin();
//             req.on_cleanup([&tx](bool aborted) { aborted ? tx.rollback() : tx.commit(); });
//             for (auto& step : work) {
//                 req.throw_if_aborted();       // ends the request quietly
//                 step();
//             }
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

#include <chrono>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "httpd.h"
#include "http_log.h"
#include "mod_abortguard.h"

namespace abortguard {

// When a cleanup runs: the values of ABORTGUARD_ON_ABORT and friends.
enum class When : int {
    kOnAbort = ABORTGUARD_ON_ABORT,
    kOnSuccess = ABORTGUARD_ON_SUCCESS,
    kAlways = ABORTGUARD_ALWAYS,
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

// An exception must not unwind into mod_abortguard's C code.
inline void log_escaped(request_rec* r, const char* what, const char* text) noexcept {
    if (r != nullptr) {
        ap_log_rerror_(__FILE__, __LINE__, APLOG_NO_MODULE, APLOG_ERR, 0, r, "AG0411: %s threw: %s",
                       what, text);
    } else {
        ap_log_error_(__FILE__, __LINE__, APLOG_NO_MODULE, APLOG_ERR, 0, nullptr,
                      "AG0411: %s threw: %s", what, text);
    }
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
          probe_(APR_RETRIEVE_OPTIONAL_FN(abortguard_probe)) {}

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

    // Sleeps up to `d`, waking at once when the client leaves. Returns
    // aborted().
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) const noexcept {
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
        if (wait_ == nullptr)
            return aborted();
        return wait_(r_, static_cast<apr_interval_time_t>(us)) == APR_ECONNABORTED;
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
    // false when mod_abortguard is not loaded or out of memory.
    template <class F>
    bool on_abort(F&& f) const noexcept {
        using Holder = detail::PoolHolder<std::decay_t<F>>;
        auto* reg = APR_RETRIEVE_OPTIONAL_FN(abortguard_on_abort);
        if (reg == nullptr)
            return false;
        Holder* h = nullptr;
        detail::guarded(r_, "on_abort", [&] { h = Holder::make(r_->pool, std::forward<F>(f)); });
        return h != nullptr && reg(r_, &call_abort<Holder>, h) == APR_SUCCESS;
    }

    // Runs `f(bool aborted)` once at the end of the request, newest first,
    // when `when` selects the outcome. An exception it throws is logged with
    // the cleanup's type and dropped; the other cleanups still run. Returns
    // false when mod_abortguard is not loaded or the request has ended.
    template <class F>
    bool on_cleanup(F&& f, When when = When::kAlways) const noexcept {
        using Holder = detail::PoolHolder<std::decay_t<F>>;
        auto* reg = APR_RETRIEVE_OPTIONAL_FN(abortguard_register_cleanup);
        if (reg == nullptr)
            return false;
        Holder* h = nullptr;
        detail::guarded(r_, "on_cleanup", [&] { h = Holder::make(r_->pool, std::forward<F>(f)); });
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
        detail::guarded(r, "C++ cleanup", [&] { static_cast<Holder*>(data)->fn(aborted != 0); });
    }

    request_rec* r_;
    APR_OPTIONAL_FN_TYPE(abortguard_aborted) * aborted_;
    APR_OPTIONAL_FN_TYPE(abortguard_wait) * wait_;
    APR_OPTIONAL_FN_TYPE(abortguard_probe) * probe_;
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
