// The wasted-work table by handler (handler_table.h): entries claimed by
// name, bounded (the 33rd name and later go to "(other)"), names cut to
// fit, concurrent claims of one name merged, and a table in shared memory
// that a forked child writes into.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "handler_table.h"

namespace abortguard {
namespace stats {
namespace {

// A zeroed table in a MAP_SHARED anonymous mapping (as the stats block's).
class SharedTable {
  public:
    SharedTable() {
        mem_ = mmap(nullptr, sizeof(HandlerTable), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        table_ = mem_ != MAP_FAILED ? new (mem_) HandlerTable() : nullptr;
    }
    ~SharedTable() {
        if (mem_ != MAP_FAILED)
            munmap(mem_, sizeof(HandlerTable));
    }
    HandlerTable* operator->() { return table_; }
    HandlerTable* get() { return table_; }

  private:
    void* mem_;
    HandlerTable* table_;
};

struct Totals {
    HandlerTotals t[HandlerTable::kEntries + 1];
    uint32_t n = 0;
    const HandlerTotals* find(const std::string& name) const {
        for (uint32_t i = 0; i < n; ++i) {
            if (name == t[i].name)
                return &t[i];
        }
        return nullptr;
    }
};

Totals totals_of(HandlerTable* table) {
    Totals out;
    out.n = table->snapshot(out.t);
    return out;
}

TEST(HandlerTable, SumsByNameLargestFirst) {
    SharedTable table;
    ASSERT_NE(table.get(), nullptr);
    table->record("cgi-script", 100);
    table->record("proxy-server", 5000);
    table->record("cgi-script", 300);
    table->record("", 7);
    table->record(nullptr, 1);
    const Totals got = totals_of(table.get());
    ASSERT_EQ(got.n, 3u);
    EXPECT_STREQ(got.t[0].name, "proxy-server");
    EXPECT_STREQ(got.t[1].name, "cgi-script");
    EXPECT_EQ(got.t[1].count, 2u);
    EXPECT_EQ(got.t[1].sum_us, 400u);
    EXPECT_EQ(got.t[1].max_us, 300u);
    EXPECT_STREQ(got.t[2].name, HandlerTable::kNoHandler);
    EXPECT_EQ(got.t[2].count, 2u);
    EXPECT_FALSE(got.t[2].other);
}

TEST(HandlerTable, LongNamesAreCutAndStillMatch) {
    SharedTable table;
    const std::string long_name(100, 'h');
    table->record(long_name.c_str(), 1);
    table->record((long_name + "-different-tail").c_str(), 1);  // same first 31 bytes
    const Totals got = totals_of(table.get());
    ASSERT_EQ(got.n, 1u);
    EXPECT_EQ(std::string(got.t[0].name), long_name.substr(0, kHandlerNameBytes - 1));
    EXPECT_EQ(got.t[0].count, 2u);
}

// The label set stays bounded whatever tenants name their handlers.
TEST(HandlerTable, NamesBeyondTheBoundCountAsOther) {
    SharedTable table;
    for (uint32_t i = 0; i < HandlerTable::kEntries + 10; ++i)
        table->record(("handler-" + std::to_string(i)).c_str(), 10);
    table->record("handler-0", 10);  // a known name still has its entry
    const Totals got = totals_of(table.get());
    ASSERT_EQ(got.n, HandlerTable::kEntries + 1);
    const HandlerTotals* other = got.find(HandlerTable::kOther);
    ASSERT_NE(other, nullptr);
    EXPECT_TRUE(other->other);
    EXPECT_EQ(other->count, 10u);
    EXPECT_EQ(got.find("handler-0")->count, 2u);
    EXPECT_EQ(got.find("handler-40"), nullptr);
}

TEST(HandlerTable, AnEmptyTableHasNoTotals) {
    SharedTable table;
    EXPECT_EQ(totals_of(table.get()).n, 0u);
}

// Threads claiming the same names at once: every sample is counted, and a
// name claimed twice (two racers) is still one total.
TEST(HandlerTable, ConcurrentClaimsLoseNothing) {
    SharedTable table;
    constexpr int kThreads = 8;
    constexpr int kEach = 5000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&table, t] {
            for (int i = 0; i < kEach; ++i)
                table->record((i + t) % 2 ? "odd" : "even", 1);
        });
    }
    for (auto& th : threads)
        th.join();
    const Totals got = totals_of(table.get());
    ASSERT_EQ(got.n, 2u);
    EXPECT_EQ(got.find("odd")->count + got.find("even")->count, uint64_t{kThreads} * kEach);
    EXPECT_EQ(got.find("odd")->sum_us, got.find("odd")->count);
}

// httpd's case: a child writes, the parent reads.
TEST(HandlerTable, SharedWithAForkedChild) {
    SharedTable table;
    table->record("mod_perl", 5);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        table->record("mod_perl", 10);
        table->record("cgi-script", 20);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const Totals got = totals_of(table.get());
    ASSERT_EQ(got.n, 2u);
    EXPECT_EQ(got.find("mod_perl")->sum_us, 15u);
    EXPECT_EQ(got.find("cgi-script")->sum_us, 20u);
}

}  // namespace
}  // namespace stats
}  // namespace abortguard
