#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

#include "clock.h"
#include "sched_slice.h"
#include "token.h"

using abortguard::kShortSliceNs;
using abortguard::ShortSliceScope;

namespace {

struct Attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

Attr attr_of(pid_t tid) {
    Attr a{};
    EXPECT_EQ(syscall(SYS_sched_getattr, tid, &a, sizeof a, 0), 0) << "sched_getattr: " << errno;
    return a;
}

bool set_attr(const Attr& want) {
    Attr a = want;
    a.size = sizeof a;
    a.flags = 0;
    return syscall(SYS_sched_setattr, 0, &a, 0) == 0;
}

pid_t this_tid() {
    return static_cast<pid_t>(syscall(SYS_gettid));
}

// Each test runs on a thread of its own, so that the test runner's thread
// keeps its scheduling attributes whatever a test does.
void on_fresh_thread(const std::function<void()>& fn) {
    std::thread t(fn);
    t.join();
}

// Whether this kernel gives a SCHED_OTHER thread the slice it asks for
// (Linux 6.12 and later); older ones accept the request and ignore it.
bool kernel_honours_slices() {
    bool honoured = false;
    on_fresh_thread([&] {
        Attr a = attr_of(0);
        a.runtime = 3 * kShortSliceNs;
        honoured = set_attr(a) && attr_of(0).runtime == 3 * kShortSliceNs;
    });
    return honoured;
}

#define SKIP_WITHOUT_SLICES()                                                                  \
    if (!kernel_honours_slices())                                                              \
    GTEST_SKIP() << "this kernel ignores per-thread slices (before Linux 6.12); the module's " \
                    "requests are no-ops here"

TEST(ShortSlice, AScopeGivesTheShortestSliceAndTheThreadsOwnBack) {
    SKIP_WITHOUT_SLICES();
    on_fresh_thread([] {
        const Attr before = attr_of(0);
        ASSERT_GT(before.runtime, kShortSliceNs) << "a fresh thread has the base slice";
        {
            ShortSliceScope scope;
            const Attr inside = attr_of(0);
            EXPECT_EQ(inside.runtime, kShortSliceNs);
            EXPECT_EQ(inside.nice, before.nice);
            EXPECT_EQ(inside.policy, before.policy);
        }
        const Attr after = attr_of(0);
        EXPECT_EQ(after.runtime, before.runtime);
        EXPECT_EQ(after.nice, before.nice);
    });
}

TEST(ShortSlice, ASliceOfTheThreadsOwnAndItsNiceValueAndPolicySurvive) {
    SKIP_WITHOUT_SLICES();
    on_fresh_thread([] {
        Attr own = attr_of(0);
        own.policy = SCHED_BATCH;
        own.nice = 7;  // a higher nice value needs no privilege
        own.runtime = 5 * kShortSliceNs;
        ASSERT_TRUE(set_attr(own)) << errno;
        {
            ShortSliceScope scope;
            const Attr inside = attr_of(0);
            EXPECT_EQ(inside.runtime, kShortSliceNs);
            EXPECT_EQ(inside.nice, 7);
            EXPECT_EQ(inside.policy, static_cast<uint32_t>(SCHED_BATCH));
        }
        const Attr after = attr_of(0);
        EXPECT_EQ(after.runtime, 5 * kShortSliceNs);
        EXPECT_EQ(after.nice, 7);
        EXPECT_EQ(after.policy, static_cast<uint32_t>(SCHED_BATCH));
    });
}

TEST(ShortSlice, NestedScopesLeaveTheOuterOnesSlice) {
    SKIP_WITHOUT_SLICES();
    on_fresh_thread([] {
        const Attr before = attr_of(0);
        {
            ShortSliceScope outer;
            { ShortSliceScope inner; }
            EXPECT_EQ(attr_of(0).runtime, kShortSliceNs) << "the inner scope had nothing to undo";
        }
        EXPECT_EQ(attr_of(0).runtime, before.runtime);
    });
}

TEST(ShortSlice, AThreadWaitingOnATokenHasTheShortSliceOnlyWhileItSleeps) {
    SKIP_WITHOUT_SLICES();
    abortguard::Token token;
    std::atomic<pid_t> tid{0};
    std::atomic<bool> woke{false};
    uint64_t runtime_before = 0, runtime_after = 0;
    std::thread waiter([&] {
        runtime_before = attr_of(0).runtime;
        tid.store(this_tid());
        EXPECT_TRUE(token.wait_until(abortguard::mono_ns() + 10 * 1000000000LL));
        runtime_after = attr_of(0).runtime;
        woke.store(true);
    });
    // Observe it from outside while it sleeps.
    while (tid.load() == 0)
        std::this_thread::yield();
    const int64_t give_up = abortguard::mono_ns() + 5 * 1000000000LL;
    uint64_t seen = 0;
    while (abortguard::mono_ns() < give_up && (seen = attr_of(tid.load()).runtime) != kShortSliceNs)
        std::this_thread::yield();
    EXPECT_EQ(seen, kShortSliceNs) << "the sleeping waiter asked for the short slice";
    token.abort(abortguard::Reason::kFin, abortguard::mono_ns());
    waiter.join();
    EXPECT_TRUE(woke.load());
    EXPECT_GT(runtime_before, kShortSliceNs);
    EXPECT_EQ(runtime_after, runtime_before) << "its own slice back once it woke";
}

TEST(ThreadPriority, SetsTheNiceValueAndTheShortSliceOfAnotherThread) {
    on_fresh_thread([] {
        std::atomic<pid_t> tid{0};
        std::atomic<bool> done{false};
        std::thread target([&] {
            tid.store(this_tid());
            while (!done.load())
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        });
        while (tid.load() == 0)
            std::this_thread::yield();
        // A higher nice value than the thread's needs no privilege.
        const abortguard::Status st = abortguard::set_thread_priority(tid.load(), 4);
        EXPECT_TRUE(st.is_ok()) << st.to_string();
        const Attr now = attr_of(tid.load());
        EXPECT_EQ(now.nice, 4);
        if (kernel_honours_slices()) {
            EXPECT_EQ(now.runtime, kShortSliceNs);
        }
        done.store(true);
        target.join();
    });
}

// The check, in a process of its own without the privilege: as root, a
// child that switches to nobody (RLIMIT_NICE stays 0, so nice -20 is out of
// its reach). Exit status 0: reported, nice unchanged, slice set.
int nice_out_of_reach_child(bool honours) {
    if (geteuid() == 0 && setuid(65534) != 0)
        return 10;
    const pid_t tid = this_tid();
    const abortguard::Status st = abortguard::set_thread_priority(tid, -20);
    if (st.is_ok())
        return 11;
    if (st.code() != EPERM && st.code() != EACCES)
        return 12;
    const Attr now = attr_of(tid);
    if (now.nice != 0)
        return 13;
    if (honours && now.runtime != kShortSliceNs)
        return 14;
    return 0;
}

TEST(ThreadPriority, ANiceValueOutOfReachIsReportedAndTheSliceStillSet) {
    struct rlimit rl {};
    ASSERT_EQ(getrlimit(RLIMIT_NICE, &rl), 0);
    if (geteuid() != 0 && rl.rlim_cur >= 40)
        GTEST_SKIP() << "RLIMIT_NICE allows nice -20 here";
    const bool honours = kernel_honours_slices();
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0)
        _exit(nice_out_of_reach_child(honours));
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setuid, 11: not reported, 12: another errno, "
                                         "13: nice changed, 14: no short slice";
}

}  // namespace
