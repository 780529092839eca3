// FileLock against real files, threads and processes.
#include <dirent.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "clock.h"
#include "file_lock.h"
#include "syscalls.h"

using abortguard::FileLock;
using abortguard::LockApi;
using abortguard::LockMode;
using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::Token;

namespace {

constexpr int64_t kMs = 1000000;

class FileLockTest : public ::testing::TestWithParam<LockApi> {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ag-lock-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/lock";
    }
    void TearDown() override {
        unlink(path_.c_str());
        rmdir(dir_.c_str());
    }

    // One attempt (a past deadline): the errno, 0 when it got the lock.
    int try_once(LockMode mode, FileLock* out) {
        return FileLock::acquire(path_.c_str(), mode, 0, nullptr, out, GetParam()).code();
    }
    int acquire(LockMode mode, FileLock* out, int64_t wait_ns = 5000 * kMs,
                const Token* cancel = nullptr) {
        return FileLock::acquire(path_.c_str(), mode, mono_ns() + wait_ns, cancel, out, GetParam())
            .code();
    }

    std::string dir_, path_;
};

TEST_P(FileLockTest, ExclusiveExcludesEveryoneElseAcrossThreads) {
    FileLock a;
    ASSERT_EQ(acquire(LockMode::kExclusive, &a), 0);
    std::thread other([&] {
        FileLock b;
        EXPECT_EQ(try_once(LockMode::kExclusive, &b), ETIMEDOUT);
        EXPECT_EQ(try_once(LockMode::kShared, &b), ETIMEDOUT);
        EXPECT_FALSE(b.held());
    });
    other.join();
    a.release();
    FileLock c;
    EXPECT_EQ(try_once(LockMode::kExclusive, &c), 0);
}

TEST_P(FileLockTest, SharedLocksCoexistButExcludeAnExclusiveOne) {
    FileLock a, b, c;
    ASSERT_EQ(acquire(LockMode::kShared, &a), 0);
    ASSERT_EQ(try_once(LockMode::kShared, &b), 0);
    EXPECT_EQ(try_once(LockMode::kExclusive, &c), ETIMEDOUT);
    a.release();
    b.release();
    EXPECT_EQ(try_once(LockMode::kExclusive, &c), 0);
}

TEST_P(FileLockTest, ExcludesAnotherProcess) {
    int ready[2], done[2];
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(done), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        FileLock held;
        if (try_once(LockMode::kExclusive, &held) != 0)
            _exit(1);
        char c = 'x';
        if (write(ready[1], &c, 1) != 1)
            _exit(2);
        if (read(done[0], &c, 1) != 1)
            _exit(3);  // hold until told
        _exit(0);
    }
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    FileLock mine;
    EXPECT_EQ(try_once(LockMode::kShared, &mine), ETIMEDOUT);
    ASSERT_EQ(write(done[1], "x", 1), 1);
    EXPECT_EQ(acquire(LockMode::kExclusive, &mine), 0) << "released when the holder exits";
    int status = 0;
    waitpid(child, &status, 0);
    EXPECT_EQ(status, 0);
    for (int fd : {ready[0], ready[1], done[0], done[1]})
        close(fd);
}

TEST_P(FileLockTest, TimesOutWithoutTheLock) {
    FileLock a, b;
    ASSERT_EQ(acquire(LockMode::kExclusive, &a), 0);
    const int64_t start = mono_ns();
    EXPECT_EQ(acquire(LockMode::kExclusive, &b, 50 * kMs), ETIMEDOUT);
    const int64_t took = mono_ns() - start;
    EXPECT_GE(took, 50 * kMs);
    EXPECT_LT(took, 1000 * kMs);
    EXPECT_FALSE(b.held());
}

TEST_P(FileLockTest, AbortEndsTheWaitPromptlyWithoutTheLock) {
    FileLock a;
    ASSERT_EQ(acquire(LockMode::kExclusive, &a), 0);
    Token token;
    std::atomic<int> result{-1};
    std::atomic<int64_t> returned_at{0};
    std::thread waiter([&] {
        FileLock b;
        result.store(acquire(LockMode::kExclusive, &b, 10000 * kMs, &token));
        returned_at.store(mono_ns());
        EXPECT_FALSE(b.held());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // let it wait
    const int64_t aborted_at = mono_ns();
    token.abort(Reason::kFin, aborted_at);
    waiter.join();
    EXPECT_EQ(result.load(), ECONNABORTED);
    EXPECT_LT(returned_at.load() - aborted_at, 100 * kMs);
}

TEST_P(FileLockTest, HandOverAfterReleaseIsQuick) {
    FileLock a;
    ASSERT_EQ(acquire(LockMode::kExclusive, &a), 0);
    std::atomic<int64_t> got_at{0};
    std::thread waiter([&] {
        FileLock b;
        EXPECT_EQ(acquire(LockMode::kExclusive, &b), 0);
        got_at.store(mono_ns());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // let it wait
    const int64_t released_at = mono_ns();
    a.release();
    waiter.join();
    EXPECT_LT(got_at.load() - released_at, 100 * kMs);  // loose; bench/ measures
}

TEST_P(FileLockTest, DestructorAndExceptionsRelease) {
    {
        FileLock scoped;
        ASSERT_EQ(acquire(LockMode::kExclusive, &scoped), 0);
    }
    try {
        FileLock scoped;
        ASSERT_EQ(acquire(LockMode::kExclusive, &scoped), 0);
        throw std::runtime_error("cut off");
    } catch (const std::runtime_error&) {
    }
    FileLock after;
    EXPECT_EQ(try_once(LockMode::kExclusive, &after), 0);
}

TEST_P(FileLockTest, MoveTransfersOwnership) {
    FileLock a;
    ASSERT_EQ(acquire(LockMode::kExclusive, &a), 0);
    FileLock b(std::move(a));
    EXPECT_FALSE(a.held());
    EXPECT_TRUE(b.held());
    FileLock c;
    c = std::move(b);
    EXPECT_TRUE(c.held());
    FileLock probe;
    EXPECT_EQ(try_once(LockMode::kExclusive, &probe), ETIMEDOUT);
    c.release();
    c.release();  // twice is harmless
    EXPECT_EQ(try_once(LockMode::kExclusive, &probe), 0);
}

int open_fds() {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (readdir(d) != nullptr)
        ++n;
    closedir(d);
    return n;
}

TEST_P(FileLockTest, NoDescriptorLeaksOverTenThousandCycles) {
    FileLock blocker;
    const int before = open_fds();
    for (int i = 0; i < 10000; ++i) {
        FileLock l;
        ASSERT_EQ(try_once(i % 2 ? LockMode::kShared : LockMode::kExclusive, &l), 0);
        if (i % 100 == 0) {  // and the failure paths
            FileLock busy;
            EXPECT_EQ(try_once(LockMode::kExclusive, &busy), ETIMEDOUT);
        }
    }
    FileLock missing;
    EXPECT_EQ(FileLock::acquire("/nonexistent-dir/x", LockMode::kExclusive, 0, nullptr, &missing,
                                GetParam())
                  .code(),
              ENOENT);
    EXPECT_EQ(open_fds(), before);
}

TEST_P(FileLockTest, NeverFollowsASymlinkPlantedInTheLockDirectory) {
    const std::string target = dir_ + "/elsewhere";
    ASSERT_EQ(symlink(target.c_str(), path_.c_str()), 0);
    FileLock l;
    EXPECT_EQ(try_once(LockMode::kExclusive, &l), ELOOP);
    EXPECT_FALSE(l.held());
    EXPECT_NE(access(target.c_str(), F_OK), 0) << "the symlink's target was created";
}

TEST_P(FileLockTest, RefusesAFifoWithoutBlocking) {
    ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
    FileLock l;
    const int64_t start = mono_ns();
    EXPECT_EQ(try_once(LockMode::kShared, &l), EINVAL);
    EXPECT_LT(mono_ns() - start, 1000 * kMs);
    EXPECT_FALSE(l.held());
}

TEST_P(FileLockTest, AFarDeadlineDoesNotWrapIntoThePast) {
    FileLock held, waiter;
    ASSERT_EQ(acquire(LockMode::kExclusive, &held), 0);
    Token cancel;
    std::thread aborter([&] {
        usleep(100 * 1000);
        cancel.abort(Reason::kFin, mono_ns());
    });
    // INT64_MAX - 1: one below "no deadline"; the pause arithmetic must
    // saturate instead of wrapping negative (which returned ETIMEDOUT at once).
    const int64_t start = mono_ns();
    EXPECT_EQ(FileLock::acquire(path_.c_str(), LockMode::kExclusive, INT64_MAX - 1, &cancel,
                                &waiter, GetParam())
                  .code(),
              ECONNABORTED);
    EXPECT_GE(mono_ns() - start, 90 * kMs);
    aborter.join();
}

INSTANTIATE_TEST_SUITE_P(Api, FileLockTest, ::testing::Values(LockApi::kOfd, LockApi::kFlock),
                         [](const auto& info) {
                             return std::string(info.param == LockApi::kOfd ? "ofd" : "flock");
                         });

// The EINTR seam: every syscall of the lock path is retried.
std::atomic<int> g_eintr_left{0};
int open_eintr(const char* path, int flags, mode_t mode) {
    if (g_eintr_left.fetch_sub(1) > 0) {
        errno = EINTR;
        return -1;
    }
    return ::open(path, flags, mode);
}
int fcntl_eintr(int fd, int cmd, struct flock* fl) {
    if (g_eintr_left.fetch_sub(1) > 0) {
        errno = EINTR;
        return -1;
    }
    return ::fcntl(fd, cmd, fl);
}

TEST(FileLockEintr, OpenAndLockAreRetried) {
    auto* saved_open = abortguard::sys::open_file;
    auto* saved_fcntl = abortguard::sys::fcntl_lock;
    abortguard::sys::open_file = open_eintr;
    abortguard::sys::fcntl_lock = fcntl_eintr;
    char path[] = "/tmp/ag-eintr-XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    g_eintr_left.store(6);
    FileLock l;
    const auto st = FileLock::acquire(path, LockMode::kExclusive, 0, nullptr, &l);
    abortguard::sys::open_file = saved_open;
    abortguard::sys::fcntl_lock = saved_fcntl;
    unlink(path);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_LE(g_eintr_left.load(), 0) << "the injected failures were consumed";
}

}  // namespace
