#include "stats.h"

#include <string.h>

#include <new>

namespace abortguard {
namespace stats {

namespace {

// The header takes whole cache lines, so the handler table and slot 0
// share none with it.
constexpr size_t kHeaderBytes = 128;
// Slot 0 starts after the handler table.
constexpr size_t kSlotsOffset = kHeaderBytes + sizeof(HandlerTable);

// Written once per process before counting starts (set_current), read on
// every count: relaxed is enough, the pointers' targets are shared memory
// that was mapped before this process existed.
std::atomic<Slot*> g_current{nullptr};
std::atomic<HandlerTable*> g_handlers{nullptr};
// This process's requests in flight (in_flight_enter() minus leave()),
// whichever slot they were counted in.
std::atomic<int64_t> g_own_in_flight{0};

void add(std::atomic<uint64_t>& v, uint64_t n) noexcept {
    v.fetch_add(n, std::memory_order_relaxed);
}

void raise_to(std::atomic<uint64_t>& v, uint64_t candidate) noexcept {
    uint64_t seen = v.load(std::memory_order_relaxed);
    while (candidate > seen &&
           !v.compare_exchange_weak(seen, candidate, std::memory_order_relaxed)) {
    }
}

uint64_t load(const std::atomic<uint64_t>& v) noexcept {
    return v.load(std::memory_order_relaxed);
}

void add_histogram(const Histogram& h, HistogramSnapshot* out) noexcept {
    for (uint32_t b = 0; b < kBuckets; ++b)
        out->buckets[b] += load(h.buckets[b]);
    out->count += load(h.count);
    out->sum_us += load(h.sum_us);
    const uint64_t max = load(h.max_us);
    if (max > out->max_us)
        out->max_us = max;
}

}  // namespace

static_assert(sizeof(Block) <= kHeaderBytes, "the block header outgrew its reserved bytes");
static_assert(kHeaderBytes % alignof(HandlerTable) == 0, "the table must stay aligned");
static_assert(kSlotsOffset % alignof(Slot) == 0, "slots must stay cache-line aligned");

uint32_t bucket_of(int64_t us) noexcept {
    if (us < 1)
        return 0;
    // 1 -> 1, 2..3 -> 2, 4..7 -> 3: one more than the highest set bit.
    const uint32_t b = 64 - static_cast<uint32_t>(__builtin_clzll(static_cast<uint64_t>(us)));
    return b < kBuckets ? b : kBuckets - 1;
}

uint64_t bucket_upper_us(uint32_t i) noexcept {
    if (i >= kBuckets - 1)
        return 0;
    return uint64_t{1} << i;
}

uint64_t HistogramSnapshot::quantile_us(double q) const noexcept {
    if (count == 0)
        return 0;
    // The rank of the q-quantile, 1-based, rounded up.
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count));
    if (static_cast<double>(rank) < q * static_cast<double>(count))
        ++rank;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t b = 0; b < kBuckets; ++b) {
        seen += buckets[b];
        if (seen >= rank) {
            const uint64_t upper = bucket_upper_us(b);
            return upper == 0 || upper > max_us ? max_us : upper;
        }
    }
    return max_us;  // counts moved while the snapshot was taken
}

Block::Block(uint32_t nslots, uint64_t created_unix) noexcept
    : magic_(kMagic),
      version_(kLayoutVersion),
      nslots_(nslots),
      slot_size_(sizeof(Slot)),
      created_unix_(created_unix),
      generations_(0),
      last_terminate_ns_(0) {}

bool Block::permit_terminate(int64_t now_ns, int64_t interval_ns) noexcept {
    int64_t last = last_terminate_ns_.load(std::memory_order_acquire);
    do {
        if (last != 0 && now_ns - last < interval_ns)
            return false;
    } while (!last_terminate_ns_.compare_exchange_weak(last, now_ns, std::memory_order_acq_rel));
    return true;
}

size_t Block::bytes_for(uint32_t nslots) noexcept {
    return kSlotsOffset + size_t{nslots} * sizeof(Slot);
}

Block* Block::format(void* mem, size_t len, uint32_t nslots, uint64_t created_unix) noexcept {
    if (mem == nullptr || len < bytes_for(nslots) ||
        reinterpret_cast<uintptr_t>(mem) % alignof(Slot) != 0) {
        return nullptr;
    }
    memset(mem, 0, bytes_for(nslots));
    Block* b = new (mem) Block(nslots, created_unix);
    new (b->handlers()) HandlerTable();
    Slot* s = b->slot(0);
    for (uint32_t i = 0; i < nslots; ++i) {
        // Value-initialised: every atomic starts at 0.
        new (&s[i]) Slot();
    }
    return b;
}

Block* Block::open(void* mem, size_t len, uint32_t min_slots) noexcept {
    if (mem == nullptr || len < kHeaderBytes)
        return nullptr;
    Block* b = static_cast<Block*>(mem);
    if (b->magic_ != kMagic || b->version_ != kLayoutVersion || b->slot_size_ != sizeof(Slot) ||
        b->nslots_ < min_slots || len < bytes_for(b->nslots_)) {
        return nullptr;
    }
    b->generations_.fetch_add(1, std::memory_order_relaxed);
    return b;
}

Slot* Block::slot(uint32_t i) noexcept {
    if (i >= nslots_)
        return nullptr;
    return reinterpret_cast<Slot*>(reinterpret_cast<char*>(this) + kSlotsOffset) + i;
}

const Slot* Block::slots() const noexcept {
    return reinterpret_cast<const Slot*>(reinterpret_cast<const char*>(this) + kSlotsOffset);
}

HandlerTable* Block::handlers() noexcept {
    return reinterpret_cast<HandlerTable*>(reinterpret_cast<char*>(this) + kHeaderBytes);
}

const HandlerTable* Block::handlers() const noexcept {
    return reinterpret_cast<const HandlerTable*>(reinterpret_cast<const char*>(this) +
                                                 kHeaderBytes);
}

Snapshot Block::snapshot() const noexcept {
    Snapshot out;
    out.slots = nslots_;
    out.created_unix = created_unix_;
    out.generations = load(generations_);
    const Slot* s = slots();
    for (uint32_t i = 0; i < nslots_; ++i) {
        if (load(s[i].pid) != 0)
            ++out.slots_used;
        for (uint32_t c = 0; c < kCounterSlots; ++c)
            out.counters[c] += load(s[i].counters[c]);
        for (uint32_t r = 0; r < kReasonSlots; ++r)
            out.aborts[r] += load(s[i].aborts[r]);
        for (uint32_t l = 0; l < kLatencyCount; ++l)
            add_histogram(s[i].latency[l], &out.latency[l]);
        const int64_t in_flight = s[i].in_flight.load(std::memory_order_relaxed);
        out.in_flight += in_flight > 0 ? static_cast<uint64_t>(in_flight) : 0;
    }
    for (uint32_t r = 0; r < kReasonSlots; ++r)
        out.aborts_total += out.aborts[r];
    out.nhandlers = handlers()->snapshot(out.handlers);
    return out;
}

void set_current(Slot* slot, HandlerTable* handlers) noexcept {
    g_current.store(slot, std::memory_order_relaxed);
    g_handlers.store(handlers, std::memory_order_relaxed);
}

Slot* current() noexcept {
    return g_current.load(std::memory_order_relaxed);
}

void count(Counter c, uint64_t n) noexcept {
    const uint32_t i = static_cast<uint32_t>(c);
    Slot* s = current();
    if (s != nullptr && i < kCounterSlots)
        add(s->counters[i], n);
}

void count_abort(uint32_t reason) noexcept {
    Slot* s = current();
    if (s != nullptr)
        add(s->aborts[reason < kReasonSlots ? reason : kReasonSlots - 1], 1);
}

void record(Latency which, int64_t ns) noexcept {
    const uint32_t i = static_cast<uint32_t>(which);
    Slot* s = current();
    if (s == nullptr || i >= kLatencyCount)
        return;
    const uint64_t us = ns > 0 ? static_cast<uint64_t>(ns / 1000) : 0;
    Histogram& h = s->latency[i];
    add(h.buckets[bucket_of(static_cast<int64_t>(us))], 1);
    add(h.count, 1);
    add(h.sum_us, us);
    raise_to(h.max_us, us);
}

void record_work_after_abort(const char* handler, int64_t ns) noexcept {
    record(Latency::kWorkAfterAbort, ns);
    HandlerTable* t = g_handlers.load(std::memory_order_relaxed);
    if (t != nullptr)
        t->record(handler, ns > 0 ? static_cast<uint64_t>(ns / 1000) : 0);
}

void in_flight_enter() noexcept {
    g_own_in_flight.fetch_add(1, std::memory_order_relaxed);
    if (Slot* s = current())
        s->in_flight.fetch_add(1, std::memory_order_relaxed);
}

void in_flight_leave() noexcept {
    g_own_in_flight.fetch_sub(1, std::memory_order_relaxed);
    if (Slot* s = current())
        s->in_flight.fetch_sub(1, std::memory_order_relaxed);
}

void forget_in_flight() noexcept {
    const int64_t own = g_own_in_flight.exchange(0, std::memory_order_relaxed);
    Slot* s = current();
    if (s != nullptr && own != 0)
        s->in_flight.fetch_sub(own, std::memory_order_relaxed);
}

}  // namespace stats
}  // namespace abortguard
