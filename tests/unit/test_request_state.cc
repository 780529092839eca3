#include <errno.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

#include "clock.h"
#include "log.h"
#include "request_state.h"

using abortguard::LockMode;
using abortguard::mono_ns;
using abortguard::Reason;
using abortguard::RequestState;

namespace {

constexpr int64_t kMs = 1000000;

struct TempFile {
    std::string path;
    TempFile() {
        char tmpl[] = "/tmp/ag-state-XXXXXX";
        const int fd = mkstemp(tmpl);
        close(fd);
        path = tmpl;
    }
    ~TempFile() { unlink(path.c_str()); }
};

std::vector<ag_inflight_info> inflight() {
    std::vector<ag_inflight_info> out;
    RequestState::for_each(
        [](const ag_inflight_info* info, void* ctx) {
            static_cast<std::vector<ag_inflight_info>*>(ctx)->push_back(*info);
        },
        &out);
    return out;
}

TEST(RequestState, ListedInFlightWithItsLocksUntilDestroyed) {
    TempFile f;
    {
        RequestState s("/report?id=1", "report-handler");
        RequestState::LockRef lock;
        ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
        auto all = inflight();
        ASSERT_EQ(all.size(), 1u);
        EXPECT_STREQ(all[0].uri, "/report?id=1");
        EXPECT_STREQ(all[0].handler, "report-handler");
        ASSERT_EQ(all[0].nlocks, 1);
        EXPECT_EQ(all[0].locks[0].path, f.path);
        EXPECT_EQ(all[0].locks[0].exclusive, 1);
        EXPECT_EQ(all[0].aborted_at_ns, 0);
        s.token().abort(Reason::kRst, mono_ns());
        EXPECT_EQ(inflight()[0].reason, static_cast<int>(Reason::kRst));
    }
    EXPECT_TRUE(inflight().empty());
}

TEST(RequestState, ForgottenLocksAreReleasedWhenTheRequestEnds) {
    TempFile f;
    {
        RequestState forgetful("/a", "h");
        RequestState::LockRef lock;
        ASSERT_TRUE(
            forgetful.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
    }  // never unlocked
    RequestState next("/b", "h");
    RequestState::LockRef lock;
    EXPECT_TRUE(next.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &lock).is_ok());
}

TEST(RequestState, ReleaseIsIdempotentAndCounted) {
    TempFile f;
    RequestState s("/a", "h");
    RequestState::LockRef a, b;
    ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &a).is_ok());
    ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &b).is_ok());
    EXPECT_EQ(s.held_locks(), 2);
    RequestState::release_lock(a);
    RequestState::release_lock(a);
    EXPECT_EQ(s.held_locks(), 1);
    EXPECT_EQ(s.release_locks(), 1);
    EXPECT_EQ(s.release_locks(), 0);
}

TEST(RequestState, WaitingForALockEndsWhenTheClientLeaves) {
    TempFile f;
    RequestState holder("/holder", "h"), waiter("/waiter", "h");
    RequestState::LockRef held;
    ASSERT_TRUE(
        holder.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &held).is_ok());
    waiter.token().abort(Reason::kFin, mono_ns());
    RequestState::LockRef none;
    const auto st =
        waiter.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns() + 5000 * kMs, 0, &none);
    EXPECT_EQ(st.code(), ECONNABORTED);
    EXPECT_EQ(none.owner, nullptr);
}

struct WarnCapture {
    static std::vector<std::string>& lines() {
        static std::vector<std::string> l;
        return l;
    }
    static void sink(abortguard::log::Level level, const char* msg, void*) {
        if (level == abortguard::log::Level::kWarn)
            lines().emplace_back(msg);
    }
};

TEST(RequestState, ALockHeldTooLongIsLoggedOnceAtWarn) {
    TempFile f;
    abortguard::log::set_sink(WarnCapture::sink, nullptr, abortguard::log::Level::kDebug);
    WarnCapture::lines().clear();
    {
        RequestState s("/slow-holder", "h");
        RequestState::LockRef slow, quick;
        ASSERT_TRUE(
            s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 20 * kMs, &slow).is_ok());
        ASSERT_TRUE(
            s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 5000 * kMs, &quick).is_ok());
        usleep(30 * 1000);  // hold past the first threshold only
        RequestState::release_lock(slow);
        RequestState::release_lock(slow);
    }
    abortguard::log::set_sink(nullptr, nullptr, abortguard::log::Level::kError);
    ASSERT_EQ(WarnCapture::lines().size(), 1u);
    EXPECT_NE(WarnCapture::lines()[0].find(f.path), std::string::npos);
    EXPECT_NE(WarnCapture::lines()[0].find("/slow-holder"), std::string::npos);
}

}  // namespace

TEST(RequestState, AStaleLockHandleCannotReleaseTheLockThatReusedItsRecord) {
    TempFile f, g;
    RequestState s("/reuse", "h");
    RequestState::LockRef first, second;
    ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &first).is_ok());
    RequestState::release_lock(first);
    ASSERT_TRUE(s.lock_file(g.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &second).is_ok());
    EXPECT_EQ(second.slot, first.slot) << "a released record is reused";
    RequestState::release_lock(first);  // stale: must not release `second`
    EXPECT_EQ(s.held_locks(), 1);
    RequestState::release_lock(second);
    EXPECT_EQ(s.held_locks(), 0);
}

TEST(RequestState, AHandleNamingNoRecordIsIgnored) {
    TempFile f;
    RequestState s("/forged", "h");
    RequestState::LockRef held;
    ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kExclusive, mono_ns(), 0, &held).is_ok());
    RequestState::release_lock(RequestState::LockRef{&s, held.slot + 1, held.gen});
    RequestState::release_lock(RequestState::LockRef{&s, 4096, held.gen});
    RequestState::release_lock(RequestState::LockRef{});
    EXPECT_EQ(s.held_locks(), 1);
    RequestState::release_lock(held);
    EXPECT_EQ(s.held_locks(), 0);
}

TEST(RequestState, LocksHeldAtOnceAreBoundedAndLockingPerRowIsNot) {
    TempFile f;
    RequestState s("/rows", "h");
    // Lock and unlock per row: records are reused, never refused.
    for (size_t i = 0; i < 4 * RequestState::kMaxLocksHeld; ++i) {
        RequestState::LockRef l;
        ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &l).is_ok()) << i;
        RequestState::release_lock(l);
    }
    std::vector<RequestState::LockRef> held(RequestState::kMaxLocksHeld);
    for (auto& l : held)
        ASSERT_TRUE(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &l).is_ok());
    RequestState::LockRef one_more;
    EXPECT_EQ(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &one_more).code(),
              ENOSPC);
    RequestState::release_lock(held[3]);
    EXPECT_TRUE(s.lock_file(f.path.c_str(), LockMode::kShared, mono_ns(), 0, &one_more).is_ok());
}

TEST(RequestState, CleanupsAndAbortCallbacksAreBoundedWithOneWarnLine) {
    abortguard::log::set_sink(WarnCapture::sink, nullptr, abortguard::log::Level::kDebug);
    WarnCapture::lines().clear();
    int cleanups_run = 0, callbacks_run = 0;
    {
        RequestState s("/per-row", "h");
        for (size_t i = 0; i < RequestState::kMaxCleanups; ++i) {
            ASSERT_TRUE(s.add_cleanup([&](bool) { ++cleanups_run; },
                                      abortguard::CleanupWhen::kAlways, nullptr)
                            .is_ok());
        }
        for (size_t i = 0; i < RequestState::kMaxAbortCallbacks; ++i)
            ASSERT_TRUE(s.on_abort([&](Reason) { ++callbacks_run; }).is_ok());
        for (int i = 0; i < 3; ++i) {
            EXPECT_EQ(s.add_cleanup([](bool) {}, abortguard::CleanupWhen::kAlways, nullptr).code(),
                      ENOSPC);
            EXPECT_EQ(s.on_abort([](Reason) {}).code(), ENOSPC);
        }
        s.token().abort(Reason::kFin, mono_ns());
        s.run_cleanups(true, 0);
    }
    abortguard::log::set_sink(nullptr, nullptr, abortguard::log::Level::kError);
    EXPECT_EQ(cleanups_run, static_cast<int>(RequestState::kMaxCleanups));
    EXPECT_EQ(callbacks_run, static_cast<int>(RequestState::kMaxAbortCallbacks));
    ASSERT_EQ(WarnCapture::lines().size(), 2u) << "one line per bound, not per refusal";
    EXPECT_NE(WarnCapture::lines()[0].find("AG0132"), std::string::npos);
}

TEST(RequestState, CleanupsAreRefusedOnceTheyRan) {
    RequestState s("/late", "h");
    s.run_cleanups(false, 0);
    EXPECT_EQ(s.add_cleanup([](bool) {}, abortguard::CleanupWhen::kAlways, nullptr).code(),
              ECANCELED);
}

TEST(RequestState, TheInFlightTableNamesTheVirtualHost) {
    RequestState a("/a", "h", 0, 17), b("/b", "h", 0, 42);
    auto all = inflight();
    ASSERT_EQ(all.size(), 2u);
    for (const auto& info : all)
        EXPECT_EQ(info.vhost, info.uri[1] == 'a' ? 17u : 42u);
}
