// Configuration: bad directive values are rejected by `apache2 -t` with a
// message naming the directive and its accepted values; a good config
// passes; AbortGuard is Off by default and can be switched on in .htaccess.
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace agtest {
namespace {

constexpr Millis kIo(5000);
constexpr Millis kLogWait(10000);

// The -t output without httpd's "Syntax error on line N of FILE:" line, so
// that the words "on" and the file's path cannot satisfy a check.
std::string message_part(const std::string& output) {
    std::istringstream in(output);
    std::string line, kept;
    while (std::getline(in, line)) {
        if (line.find("Syntax error on line") == std::string::npos) {
            kept += line + "\n";
        }
    }
    return kept;
}

bool has_word(const std::string& text, const std::string& word) {
    return std::regex_search(text, std::regex("\\b" + word + "\\b", std::regex::icase));
}

void expect_rejected(const std::string& line, const std::string& directive,
                     const std::vector<std::string>& accepted) {
    CommandResult r = syntax_check(line + "\n");
    EXPECT_FALSE(r.timed_out);
    EXPECT_NE(r.exit_code, 0) << "accepted: " << line << "\n" << r.output;
    std::string message = message_part(r.output);
    EXPECT_NE(message.find(directive), std::string::npos)
        << "message does not name " << directive << ":\n"
        << r.output;
    for (const auto& value : accepted) {
        EXPECT_TRUE(has_word(message, value))
            << "message does not name accepted value " << value << ":\n"
            << r.output;
    }
}

TEST(ConfigSyntax, GoodConfigPasses) {
    CommandResult r = syntax_check(
        "<Location /x>\n  AbortGuard Off\n  AbortGuardHalfClose ignore\n"
        "  AbortGuardMarkConnection Off\n</Location>\n");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("Syntax OK"), std::string::npos) << r.output;
}

// Durations out of range used to be accepted and then overflowed: a grace
// period of 153722867m fired at once, a huge exit timeout disabled the
// SIGKILL backstop; 1ms cut handlers still noticing.
TEST(ConfigSyntax, DurationsOutsideTheirRangeAreRejectedWithTheRange) {
    const std::vector<std::string> grace = {"1s", "1440m"};
    expect_rejected("AbortGuardGracePeriod 153722867m", "AbortGuardGracePeriod", grace);
    expect_rejected("AbortGuardGracePeriod 1ms", "AbortGuardGracePeriod", grace);
    expect_rejected("AbortGuardGracePeriod 1441m", "AbortGuardGracePeriod", grace);
    expect_rejected("AbortGuardExitTimeout 99999999m", "AbortGuardExitTimeout", {"1s", "60m"});
    expect_rejected("AbortGuardExitTimeout 500ms", "AbortGuardExitTimeout", {"1s", "60m"});
    expect_rejected("AbortGuardCleanupWarn 61m", "AbortGuardCleanupWarn", {"1ms", "60m"});
    expect_rejected("AbortGuardLockWarn 9223372036854775807ms", "AbortGuardLockWarn",
                    {"1ms", "60m"});
}

TEST(ConfigSyntax, DurationsAtTheEdgesOfTheirRangeAndOffPass) {
    for (const std::string line :
         {"AbortGuardGracePeriod 1s", "AbortGuardGracePeriod 1440m", "AbortGuardGracePeriod off",
          "AbortGuardGracePeriod 0s", "AbortGuardExitTimeout 1s", "AbortGuardExitTimeout 60m",
          "AbortGuardExitTimeout off", "AbortGuardCleanupWarn 1ms", "AbortGuardLockWarn 60m"}) {
        CommandResult r = syntax_check(line + "\n");
        EXPECT_EQ(r.exit_code, 0) << line << "\n" << r.output;
    }
}

TEST(ConfigSyntax, BadAbortGuardValueRejected) {
    expect_rejected("AbortGuard maybe", "AbortGuard", {"On", "Off"});
}

TEST(ConfigSyntax, BadHalfCloseValueRejected) {
    expect_rejected("AbortGuardHalfClose sometimes", "AbortGuardHalfClose", {"abort", "ignore"});
}

TEST(ConfigSyntax, BadMarkConnectionValueRejected) {
    expect_rejected("AbortGuardMarkConnection 2", "AbortGuardMarkConnection", {"On", "Off"});
}

// A server without any AbortGuard line, where /ht/ turns it on through
// .htaccess (AllowOverride FileInfo).
HttpdPool& htaccess_pool() {
    static HttpdPool pool([](const std::string& mpm) {
        HttpdOptions o;
        o.name = "htaccess-" + mpm;
        o.mpm = mpm;
        o.abortguard_on = false;
        o.extra_config =
            "<Directory \"@RUNDIR@/htdocs/ht\">\n"
            "  AllowOverride FileInfo\n"
            "</Directory>\n";
        o.files["htdocs/ht/.htaccess"] = "AbortGuard On\nSetHandler abortguard-test\n";
        o.files["htdocs/ht/page"] = "unused: the handler answers\n";
        return o;
    });
    return pool;
}

class Htaccess : public HttpdTest {
  protected:
    HttpdPool& pool() override { return htaccess_pool(); }
    static void TearDownTestSuite() { htaccess_pool().stop_all(); }

    // GET url, wait for "started", FIN; returns the request's log line.
    AccessLine abort_after_start(const std::string& url, const std::string& tag) {
        RawClient c = connect();
        EXPECT_TRUE(c.send(http_get(url)));
        EXPECT_TRUE(c.read_until("started\n", kIo)) << c.received();
        c.close_fin();
        auto line = access().wait_for(tag, kLogWait);
        EXPECT_TRUE(line) << "no access log line for " << tag;
        return line.value_or(AccessLine{});
    }
};

TEST_P(Htaccess, RequestWorks) {
    std::string tag = make_tag();
    RawClient c = connect();
    ASSERT_TRUE(c.send(http_get("/ht/page?ms=0&t=" + tag)));
    auto response = c.read_response(kIo);
    ASSERT_TRUE(response) << c.received();
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, "done\n");
}

TEST_P(Htaccess, AbortGuardOnInHtaccessTakesEffect) {
    std::string tag = make_tag();
    AccessLine line = abort_after_start("/ht/page?ms=5000&flush=1&t=" + tag, tag);
    EXPECT_EQ(line.aborted, "1") << line.raw;
    EXPECT_EQ(line.reason, "fin") << line.raw;
    EXPECT_TRUE(line.noticed_us) << line.raw;
}

// Contrast on the same server: outside /ht/ nothing enabled it (default Off).
TEST_P(Htaccess, DefaultIsOff) {
    std::string tag = make_tag();
    AccessLine line = abort_after_start("/slow?ms=1000&flush=1&t=" + tag, tag);
    EXPECT_EQ(line.aborted, "-") << line.raw;
    EXPECT_FALSE(line.noticed_us) << line.raw;
}

INSTANTIATE_TEST_SUITE_P(Mpm, Htaccess, testing::ValuesIn(all_mpms()), mpm_param_name);

}  // namespace
}  // namespace agtest
