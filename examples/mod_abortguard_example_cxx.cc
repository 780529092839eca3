// An example handler in C++ that uses abortguard.hpp the way the README
// teaches it: a computation that stops when the client leaves (by throwing
// ClientAborted from throw_if_aborted()), a transaction rolled back on
// abort and committed on success by on_cleanup(), and a graceful restart or
// stop that does not wait for the computation: at the child's stop notice
// (stopping()) the transaction rolls back and the answer is 503 with
// Retry-After, so that the client asks again.
//
//   <Location /example-cxx>
//       SetHandler abortguard-example-cxx
//   </Location>
//
//   GET /example-cxx?id=42&ms=3000          computes for 3 s
//   GET /example-cxx?id=42&throw=1          the handler throws: a logged 500
//   GET /example-cxx?id=42&cleanup_throws=1 a cleanup throws: logged, the
//                                           other cleanups and the 200 stand
//   GET /example-cxx?id=42&lock=/path       the transaction runs under an
//                                           exclusive file lock (FileLockGuard);
//                                           "locked" is flushed once it is held
//
// The commits of this process are numbered under a std::mutex taken with
// MutexGuard, whose wait, like the file lock's, ends if the client leaves.
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "abortguard.hpp"
#include "http_config.h"
#include "http_main.h"
#include "http_protocol.h"
#include "util_script.h"

extern "C" module AP_MODULE_DECLARE_DATA abortguard_example_cxx_module;
APLOG_USE_MODULE(abortguard_example_cxx);

namespace {

using namespace std::chrono_literals;

// httpd parses (and %-decodes) the query: no hand-written parser.
std::string query_arg(request_rec* r, const char* name, const char* dflt) {
    apr_table_t* args;
    ap_args_to_table(r, &args);
    const char* value = apr_table_get(args, name);
    return value != nullptr ? value : dflt;
}

std::mutex g_ledger_mu;
long g_ledger = 0;  // commits of this process, guarded by g_ledger_mu

void log_notice(request_rec* r, const char* what, const std::string& id) {
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "AGX0011: transaction %s %s", id.c_str(), what);
}

// A cleanup that may run with Outcome::kTerminating (on the monitor thread,
// while the hung handler still uses r) logs without r.
void log_notice(request_rec* r, abortguard::Outcome how, const char* what, const std::string& id) {
    if (how == abortguard::Outcome::kTerminating) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf, "AGX0011: transaction %s %s",
                     id.c_str(), what);
        return;
    }
    log_notice(r, what, id);
}

// A response already started cannot change its status: it ends truncated,
// the way mod_proxy ends one whose backend broke (an error bucket: no last
// chunk, the connection closes), so that no client takes it for complete.
void end_truncated(request_rec* r) {
    conn_rec* c = r->connection;
    apr_bucket_brigade* bb = apr_brigade_create(r->pool, c->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(
        bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, nullptr, r->pool, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
}

// Ends a transaction that did not finish (the stop notice came, or the lock
// could not be had) with `status`: 503 asks the client to come again. It is
// rolled back exactly once: by the kOnAbort cleanup if the client leaves
// before this answer, else by this one.
template <class Rollback>
int give_up(const abortguard::Request& req, const Rollback& rollback, bool started, int status) {
    req.on_cleanup(rollback, abortguard::When::kOnSuccess);
    request_rec* r = req.get();
    if (started) {
        end_truncated(r);
        return OK;
    }
    if (status == HTTP_SERVICE_UNAVAILABLE)
        apr_table_setn(r->err_headers_out, "Retry-After", "1");
    return status;
}

// The work is done: commit, unless the client leaves before the response
// ends. (Registered only now: a request cut short completes without an
// abort, and must not commit.) The commit numbers itself in the ledger.
void commit_on_success(const abortguard::Request& req, const std::string& id) {
    request_rec* r = req.get();
    req.on_cleanup(
        [r, id, req](bool) {
            abortguard::MutexGuard<std::mutex> ledger;
            if (ledger.acquire(req, g_ledger_mu, std::chrono::seconds(1)) == APR_SUCCESS)
                ++g_ledger;
            log_notice(r, "committed", id);
        },
        abortguard::When::kOnSuccess);
}

int handle(abortguard::Request& req) {
    request_rec* r = req.get();
    const std::string id = query_arg(r, "id", "0");
    const auto budget = std::chrono::milliseconds(std::stoi(query_arg(r, "ms", "1000")));

    if (query_arg(r, "throw", "0") == "1")
        throw std::runtime_error("handler failed on purpose");
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "AGX0014: transaction %s begun", id.c_str());
    const auto rollback = [r, id](abortguard::Outcome how) {
        log_notice(r, how, "rolled back", id);
    };
    req.on_cleanup(rollback, abortguard::When::kOnAbort);
    abortguard::FileLockGuard lock;  // released on every way out of here
    const std::string lock_path = query_arg(r, "lock", "");
    const bool with_lock = !lock_path.empty();  // "locked" goes out before the work
    if (with_lock) {
        const apr_status_t rv = lock.acquire(req, lock_path.c_str(), ABORTGUARD_LOCK_EXCLUSIVE,
                                             std::chrono::seconds(10));
        if (rv == APR_ECONNABORTED)
            throw abortguard::ClientAborted();
        if (rv != APR_SUCCESS)  // nothing sent yet: a status can still say why
            return give_up(
                req, rollback, false,
                APR_STATUS_IS_TIMEUP(rv) ? HTTP_SERVICE_UNAVAILABLE : HTTP_INTERNAL_SERVER_ERROR);
        ap_set_content_type(r, "text/plain");
        ap_rputs("locked\n", r);
        ap_rflush(r);
    }

    const auto deadline = std::chrono::steady_clock::now() + budget;
    while (std::chrono::steady_clock::now() < deadline) {
        req.wait_for(10ms);      // a step of work that wakes early on abort
        req.throw_if_aborted();  // the client left: unwind, cleanups roll back
        if (req.stopping())
            return give_up(req, rollback, with_lock, HTTP_SERVICE_UNAVAILABLE);  // restart, stop
    }
    commit_on_success(req, id);
    if (query_arg(r, "cleanup_throws", "0") == "1") {
        // Runs first (newest first); the commit still runs after it.
        req.on_cleanup([](bool) { throw std::runtime_error("cleanup failed on purpose"); });
    }
    ap_set_content_type(r, "text/plain");
    ap_rprintf(r, "transaction %s done\n", id.c_str());
    return OK;
}

int example_handler(request_rec* r) {
    if (r->handler == nullptr || std::strcmp(r->handler, "abortguard-example-cxx") != 0) {
        return DECLINED;
    }
    return abortguard::run_handler(r, handle);
}

void register_hooks(apr_pool_t*) {
    ap_hook_handler(example_handler, nullptr, nullptr, APR_HOOK_MIDDLE);
}

}  // namespace

module AP_MODULE_DECLARE_DATA abortguard_example_cxx_module = {
    STANDARD20_MODULE_STUFF, nullptr, nullptr, nullptr, nullptr, nullptr, register_hooks,
};
