#include <gtest/gtest.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "log.h"
#include "registry.h"

using abortguard::CleanupRegistry;
using abortguard::CleanupWhen;

namespace {

// Records what the core logs, so tests can assert on it.
struct LogCapture {
    std::vector<std::string> lines;
    std::mutex mu;
    LogCapture() { abortguard::log::set_sink(record, this, abortguard::log::Level::kDebug); }
    ~LogCapture() { abortguard::log::set_sink(nullptr, nullptr, abortguard::log::Level::kError); }
    static void record(abortguard::log::Level, const char* msg, void* ctx) {
        auto* self = static_cast<LogCapture*>(ctx);
        std::lock_guard<std::mutex> lock(self->mu);
        self->lines.emplace_back(msg);
    }
    bool contains(const std::string& needle) {
        std::lock_guard<std::mutex> lock(mu);
        for (auto& l : lines)
            if (l.find(needle) != std::string::npos)
                return true;
        return false;
    }
};

void named_cleanup_for_dladdr(bool) {
    throw std::runtime_error("boom");
}

std::string self_exe_name() {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return "?";
    path[n] = '\0';
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

TEST(Registry, RunsNewestFirst) {
    CleanupRegistry reg;
    std::string order;
    for (char c : std::string("abc")) {
        reg.add([&order, c](bool) { order += c; }, CleanupWhen::kAlways, nullptr);
    }
    EXPECT_EQ(reg.run(false, 0).run, 3);
    EXPECT_EQ(order, "cba");
}

TEST(Registry, SelectsByOutcome) {
    for (bool aborted : {false, true}) {
        CleanupRegistry reg;
        std::string ran;
        reg.add([&](bool) { ran += "A"; }, CleanupWhen::kOnAbort, nullptr);
        reg.add([&](bool) { ran += "S"; }, CleanupWhen::kOnSuccess, nullptr);
        reg.add([&](bool a) { ran += a ? "x" : "o"; }, CleanupWhen::kAlways, nullptr);
        reg.run(aborted, 0);
        EXPECT_EQ(ran, aborted ? "xA" : "oS");
    }
}

TEST(Registry, RunsOnceAndRefusesLateAdditions) {
    CleanupRegistry reg;
    int calls = 0;
    reg.add([&](bool) { ++calls; }, CleanupWhen::kAlways, nullptr);
    reg.run(true, 0);
    EXPECT_EQ(reg.run(true, 0).run, 0);
    EXPECT_FALSE(reg.add([&](bool) { ++calls; }, CleanupWhen::kAlways, nullptr));
    EXPECT_EQ(calls, 1);
}

TEST(Registry, ExactlyOnceWhenTwoThreadsEndTheRequest) {
    for (int round = 0; round < 200; ++round) {
        CleanupRegistry reg;
        std::atomic<int> calls{0};
        for (int i = 0; i < 20; ++i) {
            reg.add([&](bool) { calls.fetch_add(1); }, CleanupWhen::kOnAbort, nullptr);
        }
        std::atomic<int> runners{0};
        auto end = [&] {
            if (reg.run(true, 0).run > 0)
                runners.fetch_add(1);
        };
        std::thread a(end), b(end);
        a.join();
        b.join();
        ASSERT_EQ(calls.load(), 20);
        ASSERT_EQ(runners.load(), 1);
    }
}

TEST(Registry, AThrowingCleanupIsLoggedByNameAndTheOthersRun) {
    LogCapture log;
    CleanupRegistry reg;
    int ran = 0;
    reg.add([&](bool) { ++ran; }, CleanupWhen::kAlways, nullptr);
    reg.add(named_cleanup_for_dladdr, CleanupWhen::kAlways,
            reinterpret_cast<const void*>(&named_cleanup_for_dladdr));
    reg.add([](bool) { throw 42; }, CleanupWhen::kAlways, nullptr, "the answer");
    reg.add([&](bool) { ++ran; }, CleanupWhen::kAlways, nullptr);
    const auto sum = reg.run(false, 0);
    EXPECT_EQ(ran, 2);
    EXPECT_EQ(sum.run, 4);
    EXPECT_EQ(sum.failed, 2);
    EXPECT_TRUE(log.contains("the answer threw: a non-standard exception"));
    // A static function has no dynamic symbol: it is named by file+offset.
    EXPECT_TRUE(log.contains("cleanup at " + self_exe_name() + "+0x")) << "dladdr locates it";
    EXPECT_TRUE(log.contains("threw: boom"));
}

TEST(Registry, SlowCleanupsAreTimedAndLogged) {
    LogCapture log;
    CleanupRegistry reg;
    reg.add([](bool) { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }, CleanupWhen::kAlways,
            nullptr, "slow one");
    reg.add([](bool) {}, CleanupWhen::kAlways, nullptr, "fast one");
    const auto sum = reg.run(false, 10 * 1000000);
    EXPECT_EQ(sum.slow, 1);
    EXPECT_GE(sum.slowest_ns, 30 * 1000000);
    EXPECT_TRUE(log.contains("slow one took"));
    EXPECT_FALSE(log.contains("fast one took"));
}

}  // namespace
