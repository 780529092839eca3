// AbortGuardMonitorNice: every child's monitor thread runs at the configured
// nice value (so that it is not kept off the CPU by the handlers it wakes),
// as the server's User like every other thread of the child (it starts as
// root, before mod_unixd switches users), while the request threads keep
// the process's priority. With a negative value the monitor also has the
// kernel's shortest time slice (where the kernel gives threads their own
// slices), so that it preempts on wake-up. By contrast,
// `AbortGuardMonitorNice 0` leaves it at the request threads' priority and
// slice.
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "harness.h"
#include "procfs.h"

namespace agtest {
namespace {

constexpr Millis kWait(10000);

class MonitorPriority : public testing::TestWithParam<std::string> {
  protected:
    // Starts an httpd with `extra` and checks each child's threads: the
    // monitor's nice value is `nice`, the others' are this process's (which
    // httpd inherits), as is the monitor's with nice 0.
    void expect_monitor_nice(const std::string& extra, int nice) {
        const int inherited = getpriority(PRIO_PROCESS, 0);
        const bool short_slice = nice < 0 && kernel_honours_slices();
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
            const auto started = started_monitor_threads(child, static_cast<int>(kWait.count()));
            const pid_t monitor = started.empty() ? 0 : started.front();
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
            if (short_slice) {
                EXPECT_EQ(mon.slice_ns, 100000u) << extra;
            } else {
                EXPECT_EQ(mon.slice_ns, main.slice_ns) << extra << ": the request threads' slice";
            }
            EXPECT_NE(main.slice_ns, 100000u) << "the request threads' slice changed";
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
