// The syscalls of the lock code, behind a seam so tests can inject EINTR.
//
// Production code calls through these pointers, which point at the libc
// functions; a test may point them at wrappers that fail with EINTR a few
// times. Thread contract: set them only while no other thread locks files.
#ifndef ABORTGUARD_SYSCALLS_H
#define ABORTGUARD_SYSCALLS_H

#include <fcntl.h>
#include <sys/file.h>

namespace abortguard {
namespace sys {

extern int (*open_file)(const char* path, int flags, mode_t mode);
extern int (*fcntl_lock)(int fd, int cmd, struct flock* fl);
extern int (*flock_fd)(int fd, int operation);

}  // namespace sys
}  // namespace abortguard

#endif  // ABORTGUARD_SYSCALLS_H
