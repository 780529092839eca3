#include "request_state.h"

#include <string.h>

#include <new>
#include <utility>

#include "clock.h"
#include "log.h"
#include "stats.h"

namespace abortguard {

struct RequestState::HeldLock {
    uint32_t gen;  // guarded by the owner's mu_; bumped each time the record is reused
    std::string path;
    LockMode mode;
    int64_t since_ns;
    int64_t warn_ns;
    FileLock lock;  // guarded by the owner's mu_
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
std::atomic<uint64_t> g_serial{0};

Shard& shard_of(const void* state) {
    // States are heap blocks: drop the low bits malloc keeps constant.
    return g_shards[(reinterpret_cast<uintptr_t>(state) >> 6) % kShards];
}

void copy_truncated(char* dst, size_t len, const char* src) {
    snprintf(dst, len, "%s", src != nullptr ? src : "");
}

}  // namespace

RequestState::RequestState(const char* uri, const char* handler, unsigned flags, uint64_t vhost,
                           RequestObserver* observer) noexcept
    : start_ns_(mono_ns()),
      serial_(g_serial.fetch_add(1, std::memory_order_relaxed) + 1),
      vhost_(vhost),
      observer_(observer),
      flags_(static_cast<uint8_t>(flags)) {
    copy_truncated(uri_, sizeof uri_, uri);
    copy_truncated(handler_, sizeof handler_, handler);
    if (observer_ != nullptr)
        token_.set_owner(this, &RequestState::on_token_aborted);
    {
        Shard& shard = shard_of(this);
        std::lock_guard<std::mutex> lock(shard.mu);
        next_ = shard.head;
        if (next_ != nullptr)
            next_->prev_ = this;
        shard.head = this;
    }
    stats::in_flight_enter();
    // After joining the table: a stop notice delivered from now on finds
    // this state there, and one delivered before is seen here.
    if (observer_ != nullptr)
        observer_->state_created(this);
}

void RequestState::on_token_aborted(void* self, Reason reason) {
    (void)reason;
    static_cast<RequestState*>(self)->arm_grace();
}

// Once, unless the cleanups began (or the state ends) first.
void RequestState::arm_grace() noexcept {
    std::lock_guard<std::mutex> guard(mu_);
    if (grace_closed_ || grace_timer_ != 0)
        return;
    grace_timer_ = observer_->arm_grace_timer(this);
}

void RequestState::note_bound(Bound which, const char* what, size_t limit) noexcept {
    if (bounds_logged_.fetch_or(which, std::memory_order_relaxed) & which)
        return;
    AG_LOG(kWarn, "AG0132: %s registered more than %zu %s; refusing more for this request", uri_,
           limit, what);
}

Status RequestState::add_cleanup(CleanupRegistry::Fn fn, CleanupWhen when,
                                 const void* identity) noexcept {
    CleanupRegistry* reg = cleanups_.load(std::memory_order_acquire);
    if (reg == nullptr) {
        CleanupRegistry* fresh = new (std::nothrow) CleanupRegistry;
        if (fresh == nullptr)
            return Status::from_errno(ENOMEM, "creating the cleanup registry");
        // Another thread may create one, or run_cleanups() close, meanwhile.
        if (cleanups_.compare_exchange_strong(reg, fresh, std::memory_order_acq_rel))
            reg = fresh;
        else
            delete fresh;
    }
    if (reg == closed_registry())
        return Status::from_errno(ECANCELED, "the cleanups have run");
    switch (reg->add_bounded(std::move(fn), when, identity, kMaxCleanups)) {
        case CleanupRegistry::Added::kYes:
            return Status::ok();
        case CleanupRegistry::Added::kFull:
            note_bound(kBoundCleanups, "cleanups", kMaxCleanups);
            return Status::from_errno(ENOSPC, "too many cleanups");
        case CleanupRegistry::Added::kClosed:
            return Status::from_errno(ECANCELED, "the cleanups have run");
        case CleanupRegistry::Added::kNoMemory:
            break;
    }
    return Status::from_errno(ENOMEM, "adding a cleanup");
}

Status RequestState::on_abort(Token::Callback cb) noexcept {
    // Counted before it is added: concurrent callers cannot overshoot.
    if (abort_callbacks_.fetch_add(1, std::memory_order_relaxed) >= kMaxAbortCallbacks) {
        abort_callbacks_.fetch_sub(1, std::memory_order_relaxed);
        note_bound(kBoundCallbacks, "abort callbacks", kMaxAbortCallbacks);
        return Status::from_errno(ENOSPC, "too many abort callbacks");
    }
    if (token_.on_abort(std::move(cb)))
        return Status::ok();
    abort_callbacks_.fetch_sub(1, std::memory_order_relaxed);
    return Status::from_errno(ENOMEM, "adding an abort callback");
}

uint64_t RequestState::last_serial() noexcept {
    return g_serial.load(std::memory_order_relaxed);
}

// Synchronous: a grace action running on this state finishes first (unless
// it is the caller: then this returns at once).
void RequestState::close_grace() noexcept {
    uint64_t timer;
    {
        std::lock_guard<std::mutex> guard(mu_);
        grace_closed_ = true;
        timer = std::exchange(grace_timer_, 0);
    }
    if (timer != 0)
        observer_->cancel_grace_timer(timer);
}

CleanupRegistry::Summary RequestState::run_cleanups(bool aborted, int64_t slow_ns) noexcept {
    close_grace();
    int64_t none = 0;
    const int64_t now = mono_ns();
    if (ending_since_ns_.compare_exchange_strong(none, now, std::memory_order_relaxed))
        note_end(now);
    CleanupRegistry* reg = nullptr;
    if (cleanups_.compare_exchange_strong(reg, closed_registry(), std::memory_order_acq_rel))
        return CleanupRegistry::Summary{};  // none registered; later ones are refused
    return reg != closed_registry() ? reg->run(aborted, slow_ns) : CleanupRegistry::Summary{};
}

RequestState::~RequestState() {
    ending_.store(true, std::memory_order_release);
    close_grace();
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
    delete cleanups_if_any();
    stats::in_flight_leave();
}

// The request ends (the first run of its cleanups: the request thread's, or
// a terminate's on the monitor thread): how long it went on working after
// its client left is wasted work, by handler.
void RequestState::note_end(int64_t now_ns) noexcept {
    if (token_.aborted())
        stats::record_work_after_abort(handler_, now_ns - token_.aborted_at_ns());
}

CleanupRegistry* RequestState::closed_registry() noexcept {
    static char marker;  // never dereferenced
    return reinterpret_cast<CleanupRegistry*>(&marker);
}

CleanupRegistry* RequestState::cleanups_if_any() noexcept {
    CleanupRegistry* reg = cleanups_.load(std::memory_order_acquire);
    return reg == closed_registry() ? nullptr : reg;
}

UpstreamCut* RequestState::upstream() noexcept {
    if (!upstream_)
        upstream_.reset(new (std::nothrow) UpstreamCut(token_));
    return upstream_.get();
}

// The index of a released record to reuse, or locks_.size(). Under mu_.
size_t RequestState::free_slot() const noexcept {
    for (size_t i = 0; i < locks_.size(); ++i) {
        if (!locks_[i]->lock.held())
            return i;
    }
    return locks_.size();
}

Status RequestState::lock_file(const char* path, LockMode mode, int64_t deadline_ns,
                               int64_t warn_ns, LockRef* out) {
    {
        std::lock_guard<std::mutex> guard(mu_);
        if (free_slot() >= kMaxLocksHeld) {
            note_bound(kBoundLocks, "locks held at once", kMaxLocksHeld);
            return Status::from_errno(ENOSPC, "too many locks held");
        }
    }
    FileLock lock;
    Status st = FileLock::acquire(path, mode, deadline_ns, &token_, &lock);
    if (!st.is_ok())
        return st;
    try {
        std::string name(path);
        std::lock_guard<std::mutex> guard(mu_);
        const size_t slot = free_slot();
        if (slot >= kMaxLocksHeld)  // another thread took the last room
            return Status::from_errno(ENOSPC, "too many locks held");
        if (slot == locks_.size())
            locks_.push_back(std::make_unique<HeldLock>(HeldLock{0, {}, mode, 0, 0, {}}));
        HeldLock* rec = locks_[slot].get();
        ++rec->gen;
        rec->path.swap(name);
        rec->mode = mode;
        rec->since_ns = mono_ns();
        rec->warn_ns = warn_ns;
        rec->lock = std::move(lock);
        *out = LockRef{this, static_cast<uint32_t>(slot), rec->gen};
        return Status::ok();
    } catch (const std::bad_alloc&) {
        return Status::from_errno(ENOMEM, "recording the lock");  // `lock` releases it
    }
}

bool RequestState::release(uint32_t slot, uint32_t gen) noexcept {
    FileLock doomed;
    int64_t since_ns, warn_ns;
    char path[128];
    {
        std::lock_guard<std::mutex> guard(mu_);
        if (slot >= locks_.size())
            return false;
        HeldLock* held = locks_[slot].get();
        if (held->gen != gen || !held->lock.held())
            return false;
        doomed = std::move(held->lock);
        since_ns = held->since_ns;
        warn_ns = held->warn_ns;
        copy_truncated(path, sizeof path, held->path.c_str());
    }
    const int64_t held_ns = mono_ns() - since_ns;
    if (warn_ns > 0 && held_ns > warn_ns) {
        AG_LOG(kWarn, "AG0121: lock on %s held for %lld ms by %s", path,
               static_cast<long long>(held_ns / 1000000), uri_);
    }
    return true;  // `doomed` closes the descriptor outside the lock
}

void RequestState::release_lock(LockRef lock) noexcept {
    if (lock.owner != nullptr)
        lock.owner->release(lock.slot, lock.gen);
}

int RequestState::release_locks() noexcept {
    // Index by index under the lock: no allocation, and a lock added
    // meanwhile by the request thread is seen too.
    int released = 0;
    for (size_t i = 0;; ++i) {
        uint32_t gen;
        {
            std::lock_guard<std::mutex> guard(mu_);
            if (i >= locks_.size())
                break;
            gen = locks_[i]->gen;
        }
        released += release(static_cast<uint32_t>(i), gen) ? 1 : 0;
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

void RequestState::snapshot(ag_inflight_info* info, bool blocking) const {
    memset(info, 0, sizeof *info);
    info->start_ns = start_ns_;
    info->vhost = vhost_;
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
    std::unique_lock<std::mutex> guard(mu_, std::defer_lock);
    if (blocking)
        guard.lock();
    else if (!guard.try_lock())
        return;  // its locks go unlisted
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

bool RequestState::try_for_each(ag_inflight_fn* fn, void* ctx) noexcept {
    bool all = true;
    for (Shard& shard : g_shards) {
        std::unique_lock<std::mutex> lock(shard.mu, std::try_to_lock);
        if (!lock.owns_lock()) {
            all = false;
            continue;
        }
        for (const RequestState* s = shard.head; s != nullptr; s = s->next_) {
            ag_inflight_info info;
            s->snapshot(&info, false);
            fn(&info, ctx);
        }
    }
    return all;
}

void RequestState::for_each_state(StateFn fn, void* ctx) {
    for (Shard& shard : g_shards) {
        std::lock_guard<std::mutex> lock(shard.mu);
        for (RequestState* s = shard.head; s != nullptr; s = s->next_)
            fn(s, ctx);
    }
}

}  // namespace abortguard
