#include "handler_table.h"

#include <string.h>

#include <algorithm>

namespace abortguard {
namespace stats {

namespace {

enum : uint32_t { kFree = 0, kClaimed = 1, kPublished = 2 };

void add(HandlerEntry& e, uint64_t us) noexcept {
    e.count.fetch_add(1, std::memory_order_relaxed);
    e.sum_us.fetch_add(us, std::memory_order_relaxed);
    uint64_t seen = e.max_us.load(std::memory_order_relaxed);
    while (us > seen && !e.max_us.compare_exchange_weak(seen, us, std::memory_order_relaxed)) {
    }
}

// The entry's name, compared as the table stores it (cut to fit).
bool same_name(const HandlerEntry& e, const char* name) noexcept {
    return strncmp(e.name, name, kHandlerNameBytes - 1) == 0;
}

void claim(HandlerEntry& e, const char* name) noexcept {
    // Plain stores: no reader looks at the name before kPublished.
    strncpy(e.name, name, kHandlerNameBytes - 1);
    e.name[kHandlerNameBytes - 1] = '\0';
    e.state.store(kPublished, std::memory_order_release);
}

void add_totals(const HandlerEntry& e, HandlerTotals* t) noexcept {
    t->count += e.count.load(std::memory_order_relaxed);
    t->sum_us += e.sum_us.load(std::memory_order_relaxed);
    t->max_us = std::max(t->max_us, e.max_us.load(std::memory_order_relaxed));
}

}  // namespace

void HandlerTable::record(const char* handler, uint64_t us) noexcept {
    const char* name = handler != nullptr && *handler != '\0' ? handler : kNoHandler;
    for (HandlerEntry& e : entries) {
        uint32_t state = e.state.load(std::memory_order_acquire);
        if (state == kFree &&
            e.state.compare_exchange_strong(state, kClaimed, std::memory_order_acquire)) {
            claim(e, name);
            add(e, us);
            return;
        }
        // Lost the race for a free entry: `state` now holds the winner's.
        if (state == kPublished && same_name(e, name)) {
            add(e, us);
            return;
        }
    }
    add(other, us);
}

uint32_t HandlerTable::snapshot(HandlerTotals* out) const noexcept {
    uint32_t n = 0;
    for (const HandlerEntry& e : entries) {
        if (e.state.load(std::memory_order_acquire) != kPublished)
            continue;
        uint32_t i = 0;
        while (i < n && !same_name(e, out[i].name))
            ++i;
        if (i == n) {
            out[n++] = HandlerTotals{};
            memcpy(out[i].name, e.name, kHandlerNameBytes);
        }
        add_totals(e, &out[i]);
    }
    HandlerTotals rest;
    add_totals(other, &rest);
    if (rest.count != 0) {
        strncpy(rest.name, kOther, kHandlerNameBytes - 1);
        rest.other = true;
        out[n++] = rest;
    }
    std::sort(out, out + n, [](const HandlerTotals& a, const HandlerTotals& b) {
        return a.sum_us != b.sum_us ? a.sum_us > b.sum_us : strcmp(a.name, b.name) < 0;
    });
    return n;
}

}  // namespace stats
}  // namespace abortguard
