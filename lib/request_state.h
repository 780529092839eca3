// RequestState: everything the core keeps about one monitored request, in
// memory the core owns (never the request's pools): its Token, its cleanup
// registry, the file locks it holds, and a short copy of its URI and handler.
//
// Every live RequestState is listed in a process-wide in-flight table, so a
// status page or the monitor thread can report on requests (age, state,
// held locks) without touching request memory.
//
// Thread contract: construct, lock_file() and destroy on the request's
// thread. token(), release_lock(), release_locks() and the in-flight
// enumeration may be called from any thread while the state is alive.
#ifndef ABORTGUARD_REQUEST_STATE_H
#define ABORTGUARD_REQUEST_STATE_H

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agcore.h"
#include "file_lock.h"
#include "registry.h"
#include "status.h"
#include "token.h"
#include "upstream_cut.h"

namespace abortguard {

class RequestState {
  public:
    // A lock bound to this request; the pointer stays valid until the
    // RequestState is destroyed, whether or not the lock is still held.
    struct HeldLock;

    RequestState(const char* uri, const char* handler) noexcept;
    // Releases locks still held (the backstop), then leaves the table.
    ~RequestState();
    RequestState(const RequestState&) = delete;
    RequestState& operator=(const RequestState&) = delete;

    Token& token() noexcept { return token_; }
    const Token& token() const noexcept { return token_; }
    int64_t start_ns() const noexcept { return start_ns_; }
    // Created on first use; nullptr when out of memory.
    CleanupRegistry* cleanups() noexcept;
    // The proxy's backend socket to shut down on abort; created on first
    // use (request thread); nullptr when out of memory.
    UpstreamCut* upstream() noexcept;

    // Locks `path` for this request (FileLock::acquire with this request's
    // token as the cancel signal). A lock held longer than `warn_ns`
    // (0: never) is logged at warn once, when it is released.
    Status lock_file(const char* path, LockMode mode, int64_t deadline_ns, int64_t warn_ns,
                     HeldLock** out);
    // Harmless for a lock already released.
    static void release_lock(HeldLock* lock) noexcept;
    // Releases every lock still held; returns how many were.
    int release_locks() noexcept;
    int held_locks() const;

    // Calls fn for every RequestState of this process, under the table's
    // locks (one shard at a time): fn must copy what it needs and must not
    // block.
    static void for_each(ag_inflight_fn* fn, void* ctx);

  private:
    void snapshot(ag_inflight_info* info) const;
    bool release(HeldLock* lock) noexcept;

    Token token_;
    const int64_t start_ns_;
    char uri_[96];  // a prefix is enough to recognise a request
    char handler_[32];
    std::unique_ptr<CleanupRegistry> cleanups_;  // request thread only
    std::unique_ptr<UpstreamCut> upstream_;      // request thread only

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<HeldLock>> locks_;  // guarded by mu_

    // The in-flight table: intrusive lists, each guarded by its shard's mutex.
    RequestState* prev_ = nullptr;
    RequestState* next_ = nullptr;
};

}  // namespace abortguard

#endif  // ABORTGUARD_REQUEST_STATE_H
