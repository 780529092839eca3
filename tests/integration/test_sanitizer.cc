// The sanitizer pipeline itself (AG_TEST_SANITIZER=asan, see harness.h),
// proved by contrast: in the ASan+UBSan run, the test module commits a bug on
// request (handler abortguard-test-sanitizer-selftest) and the harness's
// report check must return the sanitizer's report of it, from the file of the
// process that hit it, with the handler in its stack. These tests then take
// the report themselves (sanitizer_reports() returns each report once), so
// that the fixture's own check after the test finds nothing. In the plain run
// they are skipped, and what runs in both proves that the plain run is
// unchanged: httpd loads the plain builds, no runtime, no report.
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest-spi.h>

#include "harness.h"
#include "procfs.h"

namespace agtest {
namespace {

constexpr Millis kIo(10000);
// A report comes once the child has symbolized its stack.
constexpr Millis kReportWait(20000);

const char* kSelfTestConfig =
    "<Location /sanitizer-selftest>\n"
    "  SetHandler abortguard-test-sanitizer-selftest\n"
    "</Location>\n";

std::string proc_file(pid_t pid, const std::string& name) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/" + name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

// Sanitizer reports of `httpd` until at least one arrived or kReportWait.
std::vector<std::string> await_reports(Httpd& httpd) {
    std::vector<std::string> reports;
    for (Deadline deadline(kReportWait); reports.empty() && !deadline.expired();) {
        reports = httpd.sanitizer_reports();
        if (reports.empty())
            std::this_thread::sleep_for(Millis(50));
    }
    return reports;
}

std::string joined(const std::vector<std::string>& reports) {
    std::string out;
    for (const auto& r : reports)
        out += r + "\n";
    return out;
}

HttpdPool& sanitizer_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "sanitizer-" + mpm;
        o.mpm = mpm;
        o.extra_config = kSelfTestConfig;
        return o;
    });
    return pool;
}

class SanitizerSelfTest : public HttpdTest {
  protected:
    HttpdPool& pool() override { return sanitizer_pool(); }
    static void TearDownTestSuite() { sanitizer_pool().stop_all(); }

    // GET on a connection of its own; nullopt when the connection ended
    // without a response (the process serving it died).
    std::optional<HttpResponse> get(const std::string& target) {
        RawClient client = connect();
        if (!client.send(http_get(target, "Connection: close\r\n"), kIo))
            return std::nullopt;
        return client.read_response(kIo);
    }

    // Asks for bug `kind`; the sanitizer must report it: exactly one report,
    // from `source` (a path, or its start), containing each of `expected`.
    void expect_report(const std::string& kind, const std::string& source,
                       const std::vector<std::string>& expected) {
        if (sanitizer() != "asan")
            GTEST_SKIP() << "runs under AG_TEST_SANITIZER=asan only (tests/integration_asan)";
        auto response = get("/sanitizer-selftest?kind=" + kind);
        EXPECT_FALSE(response && contains(response->body, "survived"))
            << "the module survived its own " << kind << ": " << response->body;
        const auto reports = await_reports(httpd());
        ASSERT_EQ(reports.size(), 1u) << "expected one report of " << kind << ", got:\n"
                                      << joined(reports);
        const std::string& report = reports.front();
        EXPECT_EQ(report.rfind(source, 0), 0u) << "not from " << source << ":\n" << report;
        for (const auto& e : expected)
            EXPECT_TRUE(contains(report, e)) << "no '" << e << "' in:\n" << report;
        // Taken: the next check (this fixture's, after the test) sees none.
        EXPECT_TRUE(httpd().sanitizer_reports().empty());
        // The server carries on (a new child replaces the one that died).
        auto after = get("/slow?ms=0");
        ASSERT_TRUE(after) << "no answer after the report";
        EXPECT_EQ(after->status, 200);
    }
};

// Both runs: the httpd has the builds of this run's mode, and a request that
// commits no bug leaves no report.
TEST_P(SanitizerSelfTest, HttpdLoadsThisRunsBuildsAndACleanRequestLeavesNoReport) {
    const std::string maps = proc_file(httpd().pid(), "maps");
    EXPECT_TRUE(contains(maps, module_so("abortguard")))
        << "httpd has not loaded " << module_so("abortguard");
    EXPECT_TRUE(contains(maps, module_so("test")));
    const std::string environ = proc_file(httpd().pid(), "environ");
    if (sanitizer() == "asan") {
        EXPECT_TRUE(contains(maps, "/libasan.so")) << "no ASan runtime in httpd";
        EXPECT_TRUE(contains(environ, "log_path=" + httpd().sanitizer_dir() + "/asan"));
        for (pid_t child : children_of(httpd().pid())) {
            const std::string child_maps = proc_file(child, "maps");
            EXPECT_TRUE(child_maps.empty() || contains(child_maps, module_so("abortguard")));
        }
    } else {
        EXPECT_FALSE(contains(maps, "libasan")) << "ASan runtime in a plain run";
        EXPECT_FALSE(contains(maps, "_asan.so")) << "an ASan build in a plain run";
        EXPECT_FALSE(contains(environ, "ASAN_OPTIONS=log_path"));
    }
    auto slow = get("/slow?ms=0");
    ASSERT_TRUE(slow);
    EXPECT_EQ(slow->body, "done\n");
    // Without a bug asked for, the self-test handler only says which build
    // it is; in the plain build it never commits one.
    auto self = get(std::string("/sanitizer-selftest") +
                    (sanitizer() == "asan" ? "" : "?kind=heap-use-after-free"));
    ASSERT_TRUE(self);
    EXPECT_EQ(self->body, sanitizer() == "asan" ? "sanitizer\n" : "no sanitizer\n");
    EXPECT_TRUE(httpd().sanitizer_reports().empty());
}

TEST_P(SanitizerSelfTest, HeapUseAfterFreeIsReported) {
    expect_report("heap-use-after-free", httpd().sanitizer_dir() + "/asan.",
                  {"ERROR: AddressSanitizer: heap-use-after-free", "in sanitizer_selftest_handler",
                   "mod_abortguard_test.c", "freed by thread"});
}

// UBSan writes to httpd's stderr, the error log (see Httpd::environment()).
TEST_P(SanitizerSelfTest, SignedOverflowIsReported) {
    expect_report("signed-overflow", httpd().error_log_path(),
                  {"runtime error: signed integer overflow: 2147483647 + 1",
                   "in sanitizer_selftest_handler"});
}

// Pool memory used after its pool was destroyed: seen because the harness
// configures MaxMemFree 1 under the sanitizer, so the block is unmapped and
// the use faults (see Httpd::config_text).
TEST_P(SanitizerSelfTest, PoolUseAfterFreeIsReported) {
    expect_report(
        "pool-use-after-free", httpd().sanitizer_dir() + "/asan.",
        {"ERROR: AddressSanitizer: SEGV on unknown address", "in sanitizer_selftest_handler"});
}

INSTANTIATE_TEST_SUITE_P(Mpm, SanitizerSelfTest, testing::ValuesIn(all_mpms()), mpm_param_name);

// The contrast for MaxMemFree: with APR's allocators keeping freed pool
// blocks (here 2 MB per allocator), the same pool use after free goes unseen.
TEST(SanitizerMaxMemFree, WithoutItAPoolUseAfterFreeGoesUnseen) {
    if (sanitizer() != "asan")
        GTEST_SKIP() << "runs under AG_TEST_SANITIZER=asan only (tests/integration_asan)";
    HttpdOptions o;
    o.name = "sanitizer-maxmemfree";
    o.mpm = all_mpms().front();
    o.extra_config = std::string(kSelfTestConfig) + "MaxMemFree 2048\n";
    Httpd httpd(o);
    auto started = httpd.start();
    ASSERT_TRUE(started) << started.message();
    RawClient client;
    ASSERT_TRUE(client.connect(httpd.port()));
    ASSERT_TRUE(client.send(
        http_get("/sanitizer-selftest?kind=pool-use-after-free", "Connection: close\r\n"), kIo));
    auto response = client.read_response(kIo);
    ASSERT_TRUE(response) << "no response: the child died";
    EXPECT_TRUE(contains(response->body, "survived")) << response->body;
    EXPECT_TRUE(httpd.sanitizer_reports().empty());
    auto stopped = httpd.stop();
    EXPECT_TRUE(stopped) << stopped.message();
}

// A report fails a test by itself, not only through the fixture's check:
// Httpd::stop() returns it as a failure, and an httpd destroyed while its
// report was never looked at fails the test from ~Httpd.
std::unique_ptr<Httpd>& unwatched_httpd() {
    static std::unique_ptr<Httpd> h;
    return h;
}

// Starts `httpd` with the self-test handler, makes a child hit a heap use
// after free and waits until its report file is there (without reading it).
void provoke_report(Httpd& httpd) {
    auto started = httpd.start();
    ASSERT_TRUE(started) << started.message();
    RawClient client;
    ASSERT_TRUE(client.connect(httpd.port()));
    ASSERT_TRUE(client.send(
        http_get("/sanitizer-selftest?kind=heap-use-after-free", "Connection: close\r\n"), kIo));
    client.read_response(kIo);  // none: the child dies
    auto report_files = [&httpd] {
        std::error_code ec;
        auto it = std::filesystem::directory_iterator(httpd.sanitizer_dir(), ec);
        return !ec && it != std::filesystem::directory_iterator();
    };
    for (Deadline deadline(kReportWait); !report_files() && !deadline.expired();)
        std::this_thread::sleep_for(Millis(50));
    ASSERT_TRUE(report_files()) << "no report file in " << httpd.sanitizer_dir();
}

TEST(SanitizerReportCheck, StopAndTheDestructorFailOnAReportNobodyTook) {
    if (sanitizer() != "asan")
        GTEST_SKIP() << "runs under AG_TEST_SANITIZER=asan only (tests/integration_asan)";
    HttpdOptions o;
    o.mpm = all_mpms().front();
    o.extra_config = kSelfTestConfig;

    o.name = "sanitizer-stop";
    Httpd stopped_httpd(o);
    provoke_report(stopped_httpd);
    auto stopped = stopped_httpd.stop();
    EXPECT_FALSE(stopped) << "stop() ignored a sanitizer report";
    EXPECT_TRUE(contains(stopped.message(), "ERROR: AddressSanitizer: heap-use-after-free"))
        << stopped.message();

    o.name = "sanitizer-destructor";
    unwatched_httpd() = std::make_unique<Httpd>(o);
    provoke_report(*unwatched_httpd());
    EXPECT_NONFATAL_FAILURE(unwatched_httpd().reset(),
                            "ERROR: AddressSanitizer: heap-use-after-free");
}

}  // namespace
}  // namespace agtest
