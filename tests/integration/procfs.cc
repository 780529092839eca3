#include "procfs.h"

#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace agtest {

namespace {

// The kernel's struct sched_attr, first version (glibc 2.36 lacks it).
struct SchedAttr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

// The fields of /proc/.../stat after "(comm)", which may hold spaces.
std::vector<std::string> stat_fields(const std::string& path) {
    std::ifstream stat(path);
    std::string line;
    std::vector<std::string> out;
    if (!std::getline(stat, line))
        return out;
    const auto paren = line.rfind(')');
    if (paren == std::string::npos)
        return out;
    std::istringstream rest(line.substr(paren + 1));
    for (std::string f; rest >> f;)
        out.push_back(f);
    return out;
}

template <typename Fn>
void for_each_entry(const std::string& dir, Fn fn) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr)
        return;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.')
            fn(std::string(e->d_name));
    }
    closedir(d);
}

}  // namespace

char process_state(pid_t pid) {
    const auto f = stat_fields("/proc/" + std::to_string(pid) + "/stat");
    return f.empty() || f[0].empty() ? 0 : f[0][0];
}

bool process_gone(pid_t pid) {
    const char s = process_state(pid);
    return s == 0 || s == 'Z' || s == 'X';
}

std::vector<pid_t> children_of(pid_t parent) {
    std::vector<pid_t> out;
    for_each_entry("/proc", [&](const std::string& name) {
        const pid_t pid = atoi(name.c_str());
        if (pid <= 0)
            return;
        const auto f = stat_fields("/proc/" + name + "/stat");  // state, ppid, ...
        if (f.size() > 1 && f[0] != "Z" && atoi(f[1].c_str()) == parent)
            out.push_back(pid);
    });
    return out;
}

std::vector<pid_t> threads_named(pid_t pid, const std::string& name) {
    std::vector<pid_t> out;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    for_each_entry(dir, [&](const std::string& tid) {
        std::ifstream comm(dir + "/" + tid + "/comm");
        std::string c;
        if (std::getline(comm, c) && c == name)
            out.push_back(atoi(tid.c_str()));
    });
    return out;
}

ThreadInfo thread_info(pid_t pid, pid_t tid) {
    ThreadInfo info;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid);
    const auto f = stat_fields(dir + "/stat");
    // stat(5): nice is field 19; f[0] is field 3 (state).
    if (f.size() < 17)
        return info;
    info.nice = atoi(f[16].c_str());
    std::ifstream status(dir + "/status");
    for (std::string l; std::getline(status, l);) {
        if (l.rfind("Uid:", 0) == 0) {
            std::istringstream in(l.substr(4));
            uid_t real = 0;
            in >> real >> info.uid;
            info.found = true;
        }
    }
    SchedAttr a{};
    if (syscall(SYS_sched_getattr, tid, &a, sizeof a, 0) == 0)
        info.slice_ns = a.runtime;
    return info;
}

bool kernel_honours_slices() {
    bool honoured = false;
    std::thread probe([&honoured] {
        SchedAttr a{};
        if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) != 0)
            return;
        a.size = sizeof a;
        a.flags = 0;
        a.runtime = 300000;
        honoured = syscall(SYS_sched_setattr, 0, &a, 0) == 0 &&
                   syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) == 0 && a.runtime == 300000;
    });
    probe.join();
    return honoured;
}

size_t closing_sockets_on(const std::vector<int>& ports) {
    // TCP states in /proc/net/tcp: FIN_WAIT1 4, FIN_WAIT2 5, CLOSE_WAIT 8,
    // LAST_ACK 9, CLOSING 11. Inode 0: no process holds the socket any more.
    auto closing = [](unsigned st) { return st == 4 || st == 5 || st == 8 || st == 9 || st == 11; };
    size_t n = 0;
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(table);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream f(line);
            std::string slot, local, remote, state, queues, timer, retr, uid, timeout, inode;
            f >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
                inode;
            const auto colon = local.rfind(':');
            if (colon == std::string::npos || inode == "0")
                continue;
            const int port = static_cast<int>(std::strtol(local.c_str() + colon + 1, nullptr, 16));
            const auto st = static_cast<unsigned>(std::strtoul(state.c_str(), nullptr, 16));
            for (int p : ports)
                n += (p == port && closing(st));
        }
    }
    return n;
}

std::vector<pid_t> started_monitor_threads(pid_t pid, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline && !process_gone(pid)) {
        auto tids = threads_named(pid, "ag-monitor");
        const ThreadInfo main = thread_info(pid, pid);
        if (!tids.empty() && main.found && main.uid != 0)
            return tids;
        usleep(2000);  // polling /proc for the child's state, with a deadline
    }
    return {};
}

}  // namespace agtest
