// ConnTable: the client connections a child process has open, so that when
// the child stops it can end the ones that sit idle between two keep-alive
// requests instead of letting them wait for their next request (which the
// old configuration would then serve) or for KeepAliveTimeout.
//
// A fixed array of slots, allocated once: add/idle/busy/remove never lock
// and never allocate, so they are safe on the paths httpd may run from a
// signal handler (prefork tears a child down inside one).
//
// A slot's life: add() -> kBusy (a new connection's first request is never
// cut) -> set_idle() when a request ended and the connection is kept alive
// -> set_busy() when the next request's first bytes arrive -> ... ->
// remove(). shutdown_idle() moves every kIdle slot to kClosing, shuts the
// socket down for reading (shutdown(SHUT_RD): a reader blocked waiting for
// the next request sees end-of-file at once; bytes that already arrived are
// still read, and the write side, hence a response still being flushed, is
// untouched), then marks it kClosed.
//
// Safety property: remove() is synchronous. When it returns, shutdown_idle()
// is not acting on that slot and never will, so the descriptor number, which
// the kernel reuses within microseconds once closed, is never touched after
// its owner removed it. The owner must remove() before closing the socket.
//
// Thread contract: add/set_idle/set_busy/remove by the connection's owner
// thread (any thread, one at a time per slot); shutdown_idle() from any one
// thread (the monitor). Every member is lock-free and async-signal-safe
// except the constructor.
#ifndef ABORTGUARD_CONN_TABLE_H
#define ABORTGUARD_CONN_TABLE_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace abortguard {

class ConnTable {
  public:
    // Room for `capacity` connections open at once (a synchronous MPM's
    // threads per child). Throws std::bad_alloc.
    explicit ConnTable(size_t capacity);
    ConnTable(const ConnTable&) = delete;
    ConnTable& operator=(const ConnTable&) = delete;

    // Tracks `fd` as busy; returns its slot, or -1 when the table is full
    // (the connection is then simply not tracked).
    int add(int fd) noexcept;
    // The request in progress ended and the connection waits for the next.
    void set_idle(int slot) noexcept;
    // The next request began arriving. Returns false if shutdown_idle()
    // shut the connection down first (it will end after this request).
    bool set_busy(int slot) noexcept;
    // Whether shutdown_idle() shut this connection down.
    bool was_shut_down(int slot) const noexcept;
    // Stops tracking; waits while shutdown_idle() is acting on this slot.
    void remove(int slot) noexcept;

    // Shuts down every idle connection for reading; returns how many.
    int shutdown_idle() noexcept;

    size_t capacity() const noexcept { return capacity_; }
    // Slots in use (busy, idle or shut down).
    size_t open_count() const noexcept;

  private:
    enum : uint32_t { kFree = 0, kClaimed, kBusy, kIdle, kClosing, kClosed };
    struct Slot {
        std::atomic<uint32_t> state{kFree};
        std::atomic<int> fd{-1};
    };

    const size_t capacity_;
    std::unique_ptr<Slot[]> slots_;
    std::atomic<size_t> hint_{0};  // where add() starts looking
};

}  // namespace abortguard

#endif  // ABORTGUARD_CONN_TABLE_H
