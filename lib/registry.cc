#include "registry.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <exception>
#include <new>
#include <utility>

#include "clock.h"
#include "log.h"

namespace abortguard {

bool CleanupRegistry::add(Fn fn, CleanupWhen when, const void* identity,
                          std::string label) noexcept {
    try {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_)
            return false;
        entries_.push_back(Entry{std::move(fn), when, identity, std::move(label)});
        return true;
    } catch (const std::bad_alloc&) {
        return false;
    }
}

CleanupRegistry::Added CleanupRegistry::add_bounded(Fn fn, CleanupWhen when, const void* identity,
                                                    size_t limit) noexcept {
    try {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_)
            return Added::kClosed;
        if (entries_.size() >= limit)
            return Added::kFull;
        entries_.push_back(Entry{std::move(fn), when, identity, {}});
        return Added::kYes;
    } catch (const std::bad_alloc&) {
        return Added::kNoMemory;
    }
}

bool CleanupRegistry::closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
}

size_t CleanupRegistry::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.size();
}

// Only called when something is logged.
const char* CleanupRegistry::describe(const Entry& e, char* buf, size_t len) noexcept {
    if (!e.label.empty())
        return e.label.c_str();
    return describe_identity(e.identity, buf, len);
}

const char* CleanupRegistry::describe_identity(const void* identity, char* buf,
                                               size_t len) noexcept {
    // Static functions are not in the dynamic symbol table; the file and
    // offset still lead to them (addr2line -e FILE OFFSET).
    Dl_info info;
    if (identity == nullptr || dladdr(identity, &info) == 0 || info.dli_fname == nullptr) {
        snprintf(buf, len, "cleanup at %p", identity);
        return buf;
    }
    const char* slash = strrchr(info.dli_fname, '/');
    const char* file = slash ? slash + 1 : info.dli_fname;
    if (info.dli_sname != nullptr) {
        snprintf(buf, len, "cleanup %s (%s)", info.dli_sname, file);
    } else {
        snprintf(buf, len, "cleanup at %s+0x%zx", file,
                 static_cast<size_t>(static_cast<const char*>(identity) -
                                     static_cast<const char*>(info.dli_fbase)));
    }
    return buf;
}

bool CleanupRegistry::run_one(const Entry& e, bool aborted) noexcept {
    try {
        e.fn(aborted);
        return true;
    } catch (const std::exception& ex) {
        log_throw(e, ex.what());  // inside the handler: what() dies with `ex`
    } catch (...) {
        log_throw(e, "a non-standard exception");
    }
    return false;
}

void CleanupRegistry::log_throw(const Entry& e, const char* what) noexcept {
    char name[256];
    AG_LOG(kError, "AG0111: %s threw: %s", describe(e, name, sizeof name), what);
}

CleanupRegistry::Summary CleanupRegistry::run(bool aborted, int64_t slow_ns) noexcept {
    std::vector<Entry> entries;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_)
            return Summary{};
        done_ = true;
        entries.swap(entries_);
    }
    const unsigned selected =
        static_cast<unsigned>(aborted ? CleanupWhen::kOnAbort : CleanupWhen::kOnSuccess);
    Summary sum;
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if ((static_cast<unsigned>(it->when) & selected) == 0)
            continue;
        const int64_t start = mono_ns();
        running_since_ns_.store(start, std::memory_order_relaxed);
        running_identity_.store(it->identity != nullptr ? it->identity : this,
                                std::memory_order_release);
        if (!run_one(*it, aborted))
            ++sum.failed;
        running_identity_.store(nullptr, std::memory_order_release);
        const int64_t took = mono_ns() - start;
        ++sum.run;
        sum.total_ns += took;
        if (took > sum.slowest_ns)
            sum.slowest_ns = took;
        if (slow_ns > 0 && took > slow_ns) {
            ++sum.slow;
            char name[256];
            AG_LOG(kWarn, "AG0112: %s took %lld ms", describe(*it, name, sizeof name),
                   static_cast<long long>(took / 1000000));
        }
    }
    return sum;
}

bool CleanupRegistry::running(char* name, size_t len, int64_t* since_ns) const noexcept {
    const void* identity = running_identity_.load(std::memory_order_acquire);
    if (identity == nullptr)
        return false;
    *since_ns = running_since_ns_.load(std::memory_order_relaxed);
    if (identity == this)
        snprintf(name, len, "an unnamed cleanup");
    else
        describe_identity(identity, name, len);
    return true;
}

}  // namespace abortguard
