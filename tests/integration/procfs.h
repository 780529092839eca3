// What /proc says about httpd's processes and threads: the lifecycle tests
// follow children across restarts, the priority test reads the monitor
// thread's nice value and user.
#ifndef AGTEST_PROCFS_H
#define AGTEST_PROCFS_H

#include <sys/types.h>

#include <string>
#include <vector>

namespace agtest {

// 'R', 'S', 'Z', ...; 0 when the process does not exist.
char process_state(pid_t pid);
// Exited: absent, a zombie or dead.
bool process_gone(pid_t pid);
// The live (non-zombie) children of `parent`.
std::vector<pid_t> children_of(pid_t parent);
// Thread ids of `pid` whose name (/proc/PID/task/*/comm) is `name`.
std::vector<pid_t> threads_named(pid_t pid, const std::string& name);

// Sockets some process still holds open whose local port is one of `ports`
// and whose connection is closing (FIN sent or received, not yet closed by
// its owner): for a server's ports, connections it is finishing right now.
size_t closing_sockets_on(const std::vector<int>& ports);

// The ag-monitor threads of child `pid` once it has finished starting: it
// has dropped root (mod_unixd's drop_privileges hook runs after ours, which
// starts the monitor thread and sets its priority) and has a monitor thread.
// Until then the threads' users differ while glibc switches them one by one,
// the calling thread (the child's main thread) last: once it is not root, no
// thread is. Polls /proc until then or `timeout_ms`; empty if the child
// exited first or did not get there.
std::vector<pid_t> started_monitor_threads(pid_t pid, int timeout_ms);

struct ThreadInfo {
    bool found = false;
    int nice = 0;
    uid_t uid = 0;          // effective
    uint64_t slice_ns = 0;  // sched_getattr's sched_runtime: the thread's time slice
};
ThreadInfo thread_info(pid_t pid, pid_t tid);

// Whether this kernel gives a SCHED_OTHER thread the slice it asks for
// (Linux 6.12 and later); older ones accept the request and ignore it.
bool kernel_honours_slices();

}  // namespace agtest

#endif  // AGTEST_PROCFS_H
