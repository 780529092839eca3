#include "syscalls.h"

namespace abortguard {
namespace sys {

namespace {
int real_open(const char* path, int flags, mode_t mode) {
    return ::open(path, flags, mode);
}
int real_fcntl_lock(int fd, int cmd, struct flock* fl) {
    return ::fcntl(fd, cmd, fl);
}
int real_flock(int fd, int operation) {
    return ::flock(fd, operation);
}
}  // namespace

int (*open_file)(const char*, int, mode_t) = real_open;
int (*fcntl_lock)(int, int, struct flock*) = real_fcntl_lock;
int (*flock_fd)(int, int) = real_flock;

}  // namespace sys
}  // namespace abortguard
