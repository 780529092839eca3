#include "conn_table.h"

#include <errno.h>
#include <sched.h>
#include <sys/socket.h>

#include "log.h"

namespace abortguard {

ConnTable::ConnTable(size_t capacity)
    : capacity_(capacity == 0 ? 1 : capacity), slots_(new Slot[capacity_]) {}

int ConnTable::add(int fd) noexcept {
    const size_t start = hint_.load(std::memory_order_relaxed);
    for (size_t n = 0; n < capacity_; ++n) {
        const size_t i = (start + n) % capacity_;
        uint32_t expected = kFree;
        if (slots_[i].state.load(std::memory_order_relaxed) != kFree ||
            !slots_[i].state.compare_exchange_strong(expected, kClaimed,
                                                     std::memory_order_acquire)) {
            continue;
        }
        slots_[i].fd.store(fd, std::memory_order_relaxed);
        // Publishes the fd: shutdown_idle() reads it only after it saw kIdle,
        // which comes after this.
        slots_[i].state.store(kBusy, std::memory_order_release);
        hint_.store((i + 1) % capacity_, std::memory_order_relaxed);
        return static_cast<int>(i);
    }
    return -1;
}

void ConnTable::set_idle(int slot) noexcept {
    if (slot < 0)
        return;
    uint32_t expected = kBusy;
    slots_[slot].state.compare_exchange_strong(expected, kIdle, std::memory_order_acq_rel);
}

bool ConnTable::set_busy(int slot) noexcept {
    if (slot < 0)
        return true;
    uint32_t expected = kIdle;
    if (slots_[slot].state.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel))
        return true;
    return expected != kClosing && expected != kClosed;
}

bool ConnTable::was_shut_down(int slot) const noexcept {
    if (slot < 0)
        return false;
    const uint32_t s = slots_[slot].state.load(std::memory_order_acquire);
    return s == kClosing || s == kClosed;
}

void ConnTable::remove(int slot) noexcept {
    if (slot < 0)
        return;
    Slot& s = slots_[slot];
    for (;;) {
        uint32_t cur = s.state.load(std::memory_order_acquire);
        if (cur == kClosing) {
            // shutdown_idle() is between its claim and its shutdown(2): a
            // few microseconds. It never blocks, so yielding terminates.
            sched_yield();
            continue;
        }
        if (s.state.compare_exchange_weak(cur, kClaimed, std::memory_order_acq_rel))
            break;
    }
    s.fd.store(-1, std::memory_order_relaxed);
    s.state.store(kFree, std::memory_order_release);
}

int ConnTable::shutdown_idle() noexcept {
    int n = 0;
    for (size_t i = 0; i < capacity_; ++i) {
        Slot& s = slots_[i];
        uint32_t expected = kIdle;
        if (s.state.load(std::memory_order_relaxed) != kIdle ||
            !s.state.compare_exchange_strong(expected, kClosing, std::memory_order_acq_rel)) {
            continue;
        }
        // kClosing pins the slot: remove() waits, so the owner has not
        // closed this descriptor and cannot until we are done.
        const int fd = s.fd.load(std::memory_order_relaxed);
        const int err = ::shutdown(fd, SHUT_RD) == 0 ? 0 : errno;
        s.state.store(kClosed, std::memory_order_release);
        // From here on the owner may close fd: log the number only.
        if (err != 0 && err != ENOTCONN)
            AG_LOG(kDebug, "AG0131: shutdown(fd %d, SHUT_RD) failed: errno %d", fd, err);
        ++n;
    }
    return n;
}

size_t ConnTable::open_count() const noexcept {
    size_t n = 0;
    for (size_t i = 0; i < capacity_; ++i)
        n += slots_[i].state.load(std::memory_order_relaxed) != kFree ? 1 : 0;
    return n;
}

}  // namespace abortguard
