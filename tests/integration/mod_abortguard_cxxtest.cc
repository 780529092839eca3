// Test-only C++ module (never installed): abortguard.hpp's guards and
// cleanups where their lifetimes meet the request's end.
//
//   SetHandler abortguard-cxxtest
//   GET ...?case=NAME&t=TAG&lock=PATH
//
// Cases (each logs "AGC0001: TAG NAME key=value ..." at notice):
//   guardcleanup  a FileLockGuard moved into a shared_ptr that a cleanup
//                 captures (README's pattern), on a request that succeeds:
//                 the cleanup sees the lock held; the guard is destroyed
//                 after mod_abortguard released the lock
//   sub           registers an on_cleanup on a subrequest (as a handler
//                 included by mod_include does); the cleanup runs at the
//                 main request's end, long after the subrequest's pool went
//   outcome       a cleanup taking abortguard::Outcome; logs it
//   maxwait       Request::wait_for(duration::max()) until the client leaves
//   mutexthread   a MutexGuard acquired on a helper thread and left to the
//                 request pool's backstop, which runs on the request's
//                 thread: the mutex (error-checking) must not be unlocked
//                 there; logs whether it is still locked and any unlock
//                 error seen
#include <pthread.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>

#include "abortguard.hpp"
#include "module_helpers.h"
#include "http_config.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

extern "C" module AP_MODULE_DECLARE_DATA abortguard_cxxtest_module;
APLOG_USE_MODULE(abortguard_cxxtest);

namespace {

// On the server: some lines are written after the request ended.
void report(const std::string& tag, const char* name, const std::string& text) {
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf, "AGC0001: %s %s %s", tag.c_str(),
                 name, text.c_str());
}

int guard_in_cleanup(abortguard::Request& req, const std::string& tag, const std::string& path) {
    auto guard = std::make_shared<abortguard::FileLockGuard>();
    if (guard->acquire(req, path.c_str(), ABORTGUARD_LOCK_EXCLUSIVE, std::chrono::seconds(5)) !=
        APR_SUCCESS)
        return HTTP_SERVICE_UNAVAILABLE;
    req.on_cleanup([guard, tag](bool aborted) {
        report(tag, "guardcleanup",
               std::string("held=") + (guard->held() ? "1" : "0") +
                   " aborted=" + (aborted ? "1" : "0"));
    });
    ap_set_content_type(req.get(), "text/plain");
    ap_rputs("done\n", req.get());
    return OK;  // the guard lives on in the cleanup's holder
}

int in_subrequest(abortguard::Request& req, const std::string& tag) {
    request_rec* r = req.get();
    std::string self = std::string(r->uri) + "?case=none";
    request_rec* sub = ap_sub_req_lookup_uri(self.c_str(), r, nullptr);
    {
        abortguard::Request sub_req(sub);
        // A string the cleanup owns: garbage if its holder went with the
        // subrequest's pool.
        const std::string marker = "kept-" + tag;
        sub_req.on_cleanup([tag, marker](bool aborted) {
            report(tag, "sub", "marker=" + marker + " aborted=" + (aborted ? "1" : "0"));
        });
    }
    ap_destroy_sub_req(sub);
    ap_set_content_type(r, "text/plain");
    ap_rputs("done\n", r);
    return OK;
}

int outcome(abortguard::Request& req, const std::string& tag) {
    req.on_cleanup([tag](abortguard::Outcome how) {
        report(tag, "outcome", "value=" + std::to_string(static_cast<int>(how)));
    });
    ap_set_content_type(req.get(), "text/plain");
    ap_rputs("waiting\n", req.get());
    ap_rflush(req.get());
    req.wait_for(std::chrono::seconds(10));
    return OK;
}

int max_wait(abortguard::Request& req, const std::string& tag) {
    ap_set_content_type(req.get(), "text/plain");
    ap_rputs("waiting\n", req.get());
    ap_rflush(req.get());
    const auto start = std::chrono::steady_clock::now();
    const bool aborted = req.wait_for(std::chrono::hours::max());
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    report(tag, "maxwait",
           std::string("aborted=") + (aborted ? "1" : "0") + " slept_ms=" + std::to_string(ms));
    return OK;
}

// An error-checking pthread mutex: unlocking it on a thread that does not
// hold it fails with EPERM instead of being undefined, and the failure is
// kept for the report.
class CheckedMutex {
  public:
    CheckedMutex() {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        pthread_mutex_init(&m_, &attr);
        pthread_mutexattr_destroy(&attr);
    }
    bool try_lock() { return pthread_mutex_trylock(&m_) == 0; }
    void unlock() {
        const int rv = pthread_mutex_unlock(&m_);
        if (rv != 0)
            unlock_error = rv;
    }
    bool locked() {
        const int rv = pthread_mutex_trylock(&m_);
        if (rv == 0)
            pthread_mutex_unlock(&m_);
        return rv == EBUSY;
    }
    int unlock_error = 0;

  private:
    pthread_mutex_t m_;
};

struct MutexReport {
    CheckedMutex* mutex;
    std::string tag;
};

// Registered before the guard's backstop, so it runs after it.
apr_status_t report_mutex(void* p) {
    auto* rep = static_cast<MutexReport*>(p);
    report(rep->tag, "mutexthread",
           std::string("locked=") + (rep->mutex->locked() ? "1" : "0") +
               " unlock_error=" + std::to_string(rep->mutex->unlock_error));
    rep->~MutexReport();
    return APR_SUCCESS;
}

// The mutex, the report and the guard live in the request pool and are
// never destroyed (the mutex stays held by a thread that has ended).
int mutex_on_another_thread(abortguard::Request& req, const std::string& tag) {
    apr_pool_t* pool = req.get()->pool;
    auto* mutex = new (apr_palloc(pool, sizeof(CheckedMutex))) CheckedMutex();
    auto* rep = new (apr_palloc(pool, sizeof(MutexReport))) MutexReport{mutex, tag};
    apr_pool_cleanup_register(pool, rep, report_mutex, apr_pool_cleanup_null);
    apr_status_t rv = APR_EGENERAL;
    std::thread helper([&] {
        using Guard = abortguard::MutexGuard<CheckedMutex>;
        auto* guard = new (apr_palloc(pool, sizeof(Guard))) Guard();
        rv = guard->acquire(req, *mutex, std::chrono::seconds(5));
    });
    helper.join();
    if (rv != APR_SUCCESS)
        return HTTP_SERVICE_UNAVAILABLE;
    ap_set_content_type(req.get(), "text/plain");
    ap_rputs("done\n", req.get());
    return OK;
}

int handler(request_rec* r) {
    if (r->handler == nullptr || std::strcmp(r->handler, "abortguard-cxxtest") != 0)
        return DECLINED;
    return abortguard::run_handler(r, [](abortguard::Request& req) {
        const std::string name = module_arg(req.get(), "case", "none");
        const std::string tag = module_arg(req.get(), "t", "-");
        if (name == "guardcleanup")
            return guard_in_cleanup(req, tag, module_arg(req.get(), "lock", "/tmp/agc.lock"));
        if (name == "sub")
            return in_subrequest(req, tag);
        if (name == "outcome")
            return outcome(req, tag);
        if (name == "maxwait")
            return max_wait(req, tag);
        if (name == "mutexthread")
            return mutex_on_another_thread(req, tag);
        ap_set_content_type(req.get(), "text/plain");
        ap_rputs("none\n", req.get());
        return static_cast<int>(OK);
    });
}

void register_hooks(apr_pool_t*) {
    ap_hook_handler(handler, nullptr, nullptr, APR_HOOK_MIDDLE);
}

}  // namespace

module AP_MODULE_DECLARE_DATA abortguard_cxxtest_module = {
    STANDARD20_MODULE_STUFF, nullptr, nullptr, nullptr, nullptr, nullptr, register_hooks,
    AP_MODULE_FLAG_NONE};
