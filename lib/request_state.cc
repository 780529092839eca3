#include "request_state.h"

#include <string.h>

#include <new>
#include <utility>

#include "clock.h"
#include "log.h"

namespace abortguard {

struct RequestState::HeldLock {
    RequestState* owner;
    std::string path;
    LockMode mode;
    int64_t since_ns;
    int64_t warn_ns;
    FileLock lock;  // guarded by owner->mu_
};

namespace {

// The in-flight table, sharded so that request threads registering and
// leaving at once rarely contend for the same lock.
struct Shard {
    std::mutex mu;
    RequestState* head = nullptr;  // guarded by mu
};
constexpr size_t kShards = 16;
Shard g_shards[kShards];

Shard& shard_of(const void* state) {
    // States are heap blocks: drop the low bits malloc keeps constant.
    return g_shards[(reinterpret_cast<uintptr_t>(state) >> 6) % kShards];
}

void copy_truncated(char* dst, size_t len, const char* src) {
    snprintf(dst, len, "%s", src != nullptr ? src : "");
}

}  // namespace

RequestState::RequestState(const char* uri, const char* handler) noexcept : start_ns_(mono_ns()) {
    copy_truncated(uri_, sizeof uri_, uri);
    copy_truncated(handler_, sizeof handler_, handler);
    Shard& shard = shard_of(this);
    std::lock_guard<std::mutex> lock(shard.mu);
    next_ = shard.head;
    if (next_ != nullptr)
        next_->prev_ = this;
    shard.head = this;
}

RequestState::~RequestState() {
    {
        Shard& shard = shard_of(this);
        std::lock_guard<std::mutex> lock(shard.mu);
        if (prev_ != nullptr)
            prev_->next_ = next_;
        else
            shard.head = next_;
        if (next_ != nullptr)
            next_->prev_ = prev_;
    }
    release_locks();
}

CleanupRegistry* RequestState::cleanups() noexcept {
    if (!cleanups_)
        cleanups_.reset(new (std::nothrow) CleanupRegistry);
    return cleanups_.get();
}

UpstreamCut* RequestState::upstream() noexcept {
    if (!upstream_)
        upstream_.reset(new (std::nothrow) UpstreamCut(token_));
    return upstream_.get();
}

Status RequestState::lock_file(const char* path, LockMode mode, int64_t deadline_ns,
                               int64_t warn_ns, HeldLock** out) {
    FileLock lock;
    Status st = FileLock::acquire(path, mode, deadline_ns, &token_, &lock);
    if (!st.is_ok())
        return st;
    try {
        auto held = std::make_unique<HeldLock>(
            HeldLock{this, path, mode, mono_ns(), warn_ns, std::move(lock)});
        std::lock_guard<std::mutex> guard(mu_);
        locks_.push_back(std::move(held));
        *out = locks_.back().get();
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "recording the lock");  // `lock` releases it
    }
}

bool RequestState::release(HeldLock* held) noexcept {
    FileLock doomed;
    {
        std::lock_guard<std::mutex> guard(mu_);
        if (!held->lock.held())
            return false;
        doomed = std::move(held->lock);
    }
    const int64_t held_ns = mono_ns() - held->since_ns;
    if (held->warn_ns > 0 && held_ns > held->warn_ns) {
        AG_LOG(kWarn, "AG0121: lock on %s held for %lld ms by %s", held->path.c_str(),
               static_cast<long long>(held_ns / 1000000), uri_);
    }
    return true;  // `doomed` closes the descriptor outside the lock
}

void RequestState::release_lock(HeldLock* lock) noexcept {
    if (lock != nullptr)
        lock->owner->release(lock);
}

int RequestState::release_locks() noexcept {
    // Index by index under the lock: no allocation, and a lock added
    // meanwhile by the request thread is seen too.
    int released = 0;
    for (size_t i = 0;; ++i) {
        HeldLock* l;
        {
            std::lock_guard<std::mutex> guard(mu_);
            if (i >= locks_.size())
                break;
            l = locks_[i].get();
        }
        released += release(l) ? 1 : 0;
    }
    return released;
}

int RequestState::held_locks() const {
    std::lock_guard<std::mutex> guard(mu_);
    int n = 0;
    for (const auto& l : locks_)
        n += l->lock.held() ? 1 : 0;
    return n;
}

void RequestState::snapshot(ag_inflight_info* info) const {
    memset(info, 0, sizeof *info);
    info->start_ns = start_ns_;
    info->aborted_at_ns = token_.aborted_at_ns();
    info->reason = static_cast<int>(token_.reason());
    copy_truncated(info->uri, sizeof info->uri, uri_);
    copy_truncated(info->handler, sizeof info->handler, handler_);
    std::lock_guard<std::mutex> guard(mu_);
    for (const auto& l : locks_) {
        if (!l->lock.held())
            continue;
        if (info->nlocks < static_cast<int>(sizeof info->locks / sizeof info->locks[0])) {
            auto& out = info->locks[info->nlocks];
            copy_truncated(out.path, sizeof out.path, l->path.c_str());
            out.exclusive = l->mode == LockMode::kExclusive;
            out.since_ns = l->since_ns;
        }
        ++info->nlocks;
    }
}

void RequestState::for_each(ag_inflight_fn* fn, void* ctx) {
    for (Shard& shard : g_shards) {
        std::lock_guard<std::mutex> lock(shard.mu);
        for (const RequestState* s = shard.head; s != nullptr; s = s->next_) {
            ag_inflight_info info;
            s->snapshot(&info);
            fn(&info, ctx);
        }
    }
}

}  // namespace abortguard
