// FileLock: a whole-file lock held through a descriptor the guard owns.
//
// Open-file-description locks (F_OFD_SETLK) by default: unlike classic POSIX
// record locks they belong to the open file description, not the process,
// so two threads of one httpd child exclude each other just as two
// processes do, and closing some other descriptor of the same file does not
// silently drop the lock. flock(2) is the alternative (same ownership model;
// not over NFS). Acquisition blocks, tries once, or waits until a deadline,
// and stops waiting as soon as the request's client goes away.
//
// Waiting is a retry loop with a short, growing pause (50 us to 2 ms) spent
// on Token::wait_until, so an abort ends the wait at once; the cost is that a
// released lock is noticed up to 2 ms late. (A blocking F_OFD_SETLKW cannot
// be interrupted without signals, which httpd reserves for itself.)
//
// Thread contract: a FileLock is used by one thread at a time (move it to
// hand it over). acquire() may block the calling thread; `cancel` may be
// aborted from any thread. Every syscall retries EINTR.
#ifndef ABORTGUARD_FILE_LOCK_H
#define ABORTGUARD_FILE_LOCK_H

#include <cstdint>

#include "status.h"
#include "token.h"

namespace abortguard {

enum class LockMode : uint8_t { kShared, kExclusive };
enum class LockApi : uint8_t { kOfd, kFlock };

class FileLock {
  public:
    static constexpr int64_t kNoDeadline = INT64_MAX;

    FileLock() noexcept = default;
    ~FileLock() { release(); }
    FileLock(FileLock&& other) noexcept;
    FileLock& operator=(FileLock&& other) noexcept;
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;

    // Opens `path` (O_CLOEXEC, created 0644 if missing) and locks it. Waits
    // until CLOCK_MONOTONIC `deadline_ns` (kNoDeadline: forever; a past
    // deadline: one try). Errors: ETIMEDOUT when the deadline passed,
    // ECONNABORTED when `cancel` (may be null) was aborted while waiting —
    // in both cases no lock is held — ELOOP when `path` is a symlink (never
    // followed), EINVAL when it is not a regular file, or the errno of
    // open/lock.
    static Status acquire(const char* path, LockMode mode, int64_t deadline_ns, const Token* cancel,
                          FileLock* out, LockApi api = LockApi::kOfd);

    bool held() const noexcept { return fd_ >= 0; }
    int fd() const noexcept { return fd_; }

    // Unlocks and closes; harmless when not held.
    void release() noexcept;

  private:
    FileLock(int fd, LockApi api) noexcept : fd_(fd), api_(api) {}

    int fd_ = -1;
    LockApi api_ = LockApi::kOfd;
};

}  // namespace abortguard

#endif  // ABORTGUARD_FILE_LOCK_H
