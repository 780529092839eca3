#include "request_state.h"

#include <string.h>

#include <new>
#include <utility>

#include "clock.h"
#include "lifecycle.h"
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

RequestState::RequestState(const char* uri, const char* handler, unsigned flags) noexcept
    : start_ns_(mono_ns()), flags_(flags) {
    copy_truncated(uri_, sizeof uri_, uri);
    copy_truncated(handler_, sizeof handler_, handler);
    static const bool hooked = (Token::set_owner_hook(&RequestState::on_token_aborted), true);
    (void)hooked;
    token_.set_owner(this);
    {
        Shard& shard = shard_of(this);
        std::lock_guard<std::mutex> lock(shard.mu);
        next_ = shard.head;
        if (next_ != nullptr)
            next_->prev_ = this;
        shard.head = this;
    }
    // After joining the table: a stop notice delivered from now on finds
    // this state there, and one delivered before is seen here.
    if (Lifecycle* life = Lifecycle::current())
        life->on_state_created(this);
}

void RequestState::on_token_aborted(void* self, Reason reason) {
    (void)reason;
    if (Lifecycle* life = Lifecycle::current())
        life->on_state_aborted(static_cast<RequestState*>(self));
}

void RequestState::arm_grace(ArmFn arm, void* owner) noexcept {
    std::lock_guard<std::mutex> guard(mu_);
    if (grace_closed_ || grace_timer_ != 0)
        return;
    grace_timer_ = arm(owner, this);
}

CleanupRegistry::Summary RequestState::run_cleanups(bool aborted, int64_t slow_ns) noexcept {
    int64_t none = 0;
    ending_since_ns_.compare_exchange_strong(none, mono_ns(), std::memory_order_relaxed);
    CleanupRegistry* reg = cleanups_if_any();
    return reg != nullptr ? reg->run(aborted, slow_ns) : CleanupRegistry::Summary{};
}

RequestState::~RequestState() {
    ending_.store(true, std::memory_order_release);
    uint64_t timer;
    {
        std::lock_guard<std::mutex> guard(mu_);
        grace_closed_ = true;
        timer = std::exchange(grace_timer_, 0);
    }
    // Synchronous: a grace action running on this state finishes first.
    if (timer != 0)
        Lifecycle::cancel_grace(timer);
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
    delete cleanups_.load(std::memory_order_acquire);
}

CleanupRegistry* RequestState::cleanups() noexcept {
    CleanupRegistry* reg = cleanups_.load(std::memory_order_acquire);
    if (reg != nullptr)
        return reg;
    CleanupRegistry* fresh = new (std::nothrow) CleanupRegistry;
    if (fresh == nullptr)
        return nullptr;
    // Another thread may create one at the same time: one wins.
    if (!cleanups_.compare_exchange_strong(reg, fresh, std::memory_order_acq_rel)) {
        delete fresh;
        return reg;
    }
    return fresh;
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
    info->stopping = token_.stopping() ? 1 : 0;
    info->response_done = response_done() ? 1 : 0;
    info->ending_since_ns = ending_since_ns_.load(std::memory_order_relaxed);
    if (CleanupRegistry* reg = const_cast<RequestState*>(this)->cleanups_if_any()) {
        int64_t since = 0;
        if (reg->running(info->cleanup, sizeof info->cleanup, &since))
            info->cleanup_since_ns = since;
    }
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

void RequestState::for_each_state(StateFn fn, void* ctx) {
    for (Shard& shard : g_shards) {
        std::lock_guard<std::mutex> lock(shard.mu);
        for (RequestState* s = shard.head; s != nullptr; s = s->next_)
            fn(s, ctx);
    }
}

}  // namespace abortguard
