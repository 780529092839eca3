#include "file_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "clock.h"
#include "syscalls.h"

namespace abortguard {

namespace {

constexpr int64_t kFirstPauseNs = 50 * 1000;
constexpr int64_t kMaxPauseNs = 2 * 1000 * 1000;

enum class Attempt { kHeld, kBusy, kFailed };

// O_NOFOLLOW: a symlink planted in a shared lock directory must not make
// httpd open or create a file elsewhere as its user. O_NONBLOCK: opening a
// FIFO planted there must not block (it is then refused as not a regular
// file). Only the last component is protected; the directories on the way
// are the admin's.
constexpr int kOpenFlags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;

int open_for(const char* path, LockMode mode) {
    int fd;
    do {
        fd = sys::open_file(path, O_RDWR | O_CREAT | kOpenFlags, 0644);
    } while (fd < 0 && errno == EINTR);
    // A shared (read) lock needs only read access.
    if (fd < 0 && errno == EACCES && mode == LockMode::kShared) {
        do {
            fd = sys::open_file(path, O_RDONLY | kOpenFlags, 0);
        } while (fd < 0 && errno == EINTR);
    }
    return fd;
}

// 0, or the errno that refuses `fd` as a lock file.
int check_regular(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    return S_ISREG(st.st_mode) ? 0 : EINVAL;
}

Attempt try_lock(int fd, LockMode mode, LockApi api, int* err) {
    int rv;
    if (api == LockApi::kOfd) {
        struct flock fl = {};
        fl.l_type = mode == LockMode::kExclusive ? F_WRLCK : F_RDLCK;
        fl.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
        do {
            rv = sys::fcntl_lock(fd, F_OFD_SETLK, &fl);
        } while (rv < 0 && errno == EINTR);
    } else {
        const int op = (mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
        do {
            rv = sys::flock_fd(fd, op);
        } while (rv < 0 && errno == EINTR);
    }
    if (rv == 0)
        return Attempt::kHeld;
    *err = errno;
    return (*err == EAGAIN || *err == EACCES || *err == EWOULDBLOCK) ? Attempt::kBusy
                                                                     : Attempt::kFailed;
}

// Sleeps until `until` or the abort of `cancel`; true if aborted.
bool pause_until(int64_t until, const Token* cancel) {
    if (cancel != nullptr)
        return cancel->wait_until(until);
    Token never;  // a private token nobody aborts: a plain interruptible sleep
    never.wait_until(until);
    return false;
}

}  // namespace

FileLock::FileLock(FileLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), api_(other.api_) {}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
    if (this != &other) {
        release();
        fd_ = std::exchange(other.fd_, -1);
        api_ = other.api_;
    }
    return *this;
}

void FileLock::release() noexcept {
    if (fd_ < 0)
        return;
    // Closing the only descriptor of the open file description drops an
    // OFD or flock lock; no explicit unlock needed (and none can fail).
    ::close(fd_);
    fd_ = -1;
}

Status FileLock::acquire(const char* path, LockMode mode, int64_t deadline_ns, const Token* cancel,
                         FileLock* out, LockApi api) {
    const int fd = open_for(path, mode);
    if (fd < 0) {
        const int err = errno;
        return Status::from_errno(err, std::string("open ") + path);
    }
    FileLock lock(fd, api);  // closes fd on every early return
    if (const int err = check_regular(fd))
        return Status::from_errno(err, std::string("not a regular file: ") + path);
    int64_t pause = kFirstPauseNs;
    for (;;) {
        int err = 0;
        switch (try_lock(fd, mode, api, &err)) {
            case Attempt::kHeld:
                *out = std::move(lock);
                return Status::ok();
            case Attempt::kFailed:
                return Status::from_errno(err, std::string("lock ") + path);
            case Attempt::kBusy:
                break;
        }
        const int64_t now = mono_ns();
        if (now >= deadline_ns)
            return Status::from_errno(ETIMEDOUT, "waiting for the lock");
        if (pause_until(std::min(deadline_ns, sat_add(now, pause)), cancel)) {
            return Status::from_errno(ECONNABORTED, "the client went away");
        }
        pause = std::min(pause * 2, kMaxPauseNs);
    }
}

}  // namespace abortguard
