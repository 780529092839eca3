// AbortGuardMonitorNice: every child's monitor thread runs at the configured
// nice value (so that it is not kept off the CPU by the handlers it wakes),
// as the server's User like every other thread of the child (it starts as
// root, before mod_unixd switches users), while the request threads keep
// the process's priority. By contrast, `AbortGuardMonitorNice 0` leaves it
// at the request threads' priority.
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "harness.h"
#include "procfs.h"

namespace agtest {
namespace {

constexpr Millis kWait(10000);

// The monitor thread of child `pid` once the child has finished starting:
// it has dropped root (mod_unixd's drop_privileges hook runs after ours, which
// starts the monitor thread and sets its priority) and its monitor thread
// runs. Until then the threads' users differ while glibc switches them one
// by one, the calling thread (the child's main thread, which runs the
// drop_privileges hooks) last: once it is not root, no thread is. 0 if that
// does not happen within `kWait` (or the child exited).
pid_t started_monitor_of(pid_t pid) {
    for (Deadline d(kWait); !d.expired() && !process_gone(pid);) {
        const auto tids = threads_named(pid, "ag-monitor");
        const ThreadInfo main = thread_info(pid, pid);
        if (!tids.empty() && main.found && main.uid != 0)
            return tids.front();
        usleep(2000);  // polling /proc for the child's state, with a deadline
    }
    return 0;
}

class MonitorPriority : public testing::TestWithParam<std::string> {
  protected:
    // Starts an httpd with `extra` and checks each child's threads: the
    // monitor's nice value is `nice`, the others' are this process's (which
    // httpd inherits), as is the monitor's with nice 0.
    void expect_monitor_nice(const std::string& extra, int nice) {
        const int inherited = getpriority(PRIO_PROCESS, 0);
        if (nice == 0)
            nice = inherited;
        HttpdOptions o;
        static int n = 0;
        o.name = "prio-" + GetParam() + "-" + std::to_string(++n);
        o.mpm = GetParam();
        o.extra_config = extra;
        Httpd h(o);
        auto started = h.start();
        ASSERT_TRUE(started) << started.message();
        const auto children = children_of(h.pid());
        ASSERT_FALSE(children.empty());
        for (pid_t child : children) {
            const pid_t monitor = started_monitor_of(child);
            if (monitor == 0 && process_gone(child))
                continue;  // replaced meanwhile: nothing to check
            ASSERT_NE(monitor, 0) << "child " << child
                                  << " has no monitor thread or still runs as root";
            const ThreadInfo mon = thread_info(child, monitor);
            const ThreadInfo main = thread_info(child, child);
            ASSERT_TRUE(mon.found && main.found);
            EXPECT_EQ(mon.nice, nice) << extra;
            EXPECT_EQ(main.nice, inherited) << "the request threads' priority changed";
            EXPECT_EQ(mon.uid, main.uid) << "the monitor thread kept root";
        }
        auto stopped = h.stop();
        EXPECT_TRUE(stopped) << stopped.message();
    }
};

TEST_P(MonitorPriority, RunsAtTheConfiguredNiceAsTheServerUser) {
    if (geteuid() != 0)
        GTEST_SKIP() << "raising a thread's priority needs httpd started as root";
    expect_monitor_nice("", -20);  // the default
    expect_monitor_nice("AbortGuardMonitorNice -15\n", -15);
    expect_monitor_nice("AbortGuardMonitorNice 0\n", 0);
}

INSTANTIATE_TEST_SUITE_P(Mpm, MonitorPriority, testing::ValuesIn(all_mpms()), mpm_param_name);

TEST(MonitorPriorityConfig, BadValuesAreRejectedWithTheDirectiveAndWhatItAccepts) {
    EXPECT_EQ(syntax_check("AbortGuardMonitorNice -20\n").exit_code, 0);
    for (const std::string bad : {"5", "-21", "high", "-5x", "''"}) {
        CommandResult r = syntax_check("AbortGuardMonitorNice " + bad + "\n");
        EXPECT_NE(r.exit_code, 0) << "accepted: " << bad;
        const auto tail = r.output.substr(r.output.find('\n') + 1);  // not the file name
        EXPECT_NE(tail.find("AbortGuardMonitorNice"), std::string::npos) << r.output;
        EXPECT_NE(tail.find("-20"), std::string::npos) << r.output;
    }
    CommandResult r =
        syntax_check("<VirtualHost 127.0.0.1:1>\n  AbortGuardMonitorNice -5\n</VirtualHost>\n");
    EXPECT_NE(r.exit_code, 0) << "accepted in a virtual host";
}

}  // namespace
}  // namespace agtest
