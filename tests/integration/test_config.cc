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

void expect_accepted(const std::vector<std::string>& lines) {
    for (const std::string& line : lines) {
        CommandResult r = syntax_check(line + "\n");
        EXPECT_EQ(r.exit_code, 0) << line << "\n" << r.output;
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
    expect_accepted(
        {"AbortGuardGracePeriod 1s", "AbortGuardGracePeriod 1440m", "AbortGuardGracePeriod off",
         "AbortGuardGracePeriod 0s", "AbortGuardExitTimeout 1s", "AbortGuardExitTimeout 60m",
         "AbortGuardExitTimeout off", "AbortGuardCleanupWarn 1ms", "AbortGuardLockWarn 60m"});
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

TEST(ConfigSyntax, BadWordAndNumberValuesRejectedWithWhatIsAccepted) {
    expect_rejected("AbortGuardGraceAction kill", "AbortGuardGraceAction", {"log", "terminate"});
    // "-20" has no word boundary before its sign; "20" and "0" name the range.
    expect_rejected("AbortGuardMonitorNice 5", "AbortGuardMonitorNice", {"20", "0"});
    expect_rejected("AbortGuardMonitorNice -21", "AbortGuardMonitorNice", {"20", "0"});
    expect_rejected("AbortGuardMonitorNice -5x", "AbortGuardMonitorNice", {"20", "0"});
    expect_rejected("AbortGuardLogStatus 42", "AbortGuardLogStatus", {"100", "999", "Off"});
    expect_rejected("AbortGuardLogStatus 99999999999999999999", "AbortGuardLogStatus",
                    {"100", "999", "Off"});
    expect_rejected("AbortGuardKeepAlive 10s 5s 128", "AbortGuardKeepAlive", {"1", "127"});
    expect_rejected("AbortGuardKeepAlive 1500ms", "AbortGuardKeepAlive", {"1s", "32767s"});
    expect_rejected("AbortGuardTerminateInterval off", "AbortGuardTerminateInterval",
                    {"1s", "60m"});
}

TEST(ConfigSyntax, GoodWordAndNumberValuesPass) {
    expect_accepted({"AbortGuardGraceAction Terminate", "AbortGuardGraceAction log",
                     "AbortGuardMonitorNice -20", "AbortGuardMonitorNice 0",
                     "AbortGuardLogStatus 499", "AbortGuardLogStatus off",
                     "AbortGuardKeepAlive 10s 5s 127", "AbortGuardKeepAlive Off",
                     "AbortGuardTerminateInterval 1s", "AbortGuardHalfClose IGNORE"});
}

// A child has one monitor thread and one lifecycle whichever virtual host
// its requests belong to: the process-wide directives are refused anywhere
// but the main server's configuration, with httpd's message naming the
// section (contrast: each passes in the main server, above).
TEST(ConfigSyntax, ProcessWideDirectivesAreRefusedInsideAVirtualHost) {
    for (const std::string line :
         {"AbortGuardGracePeriod 5s", "AbortGuardGraceAction terminate", "AbortGuardExitTimeout 5s",
          "AbortGuardMonitorNice -5", "AbortGuardTerminateInterval 5s"}) {
        std::string directive = line.substr(0, line.find(' '));
        CommandResult r =
            syntax_check("<VirtualHost 127.0.0.1:1>\n  " + line + "\n</VirtualHost>\n");
        EXPECT_NE(r.exit_code, 0) << "accepted in a VirtualHost: " << line << "\n" << r.output;
        std::string message = message_part(r.output);
        EXPECT_NE(message.find(directive), std::string::npos) << r.output;
        EXPECT_NE(message.find("VirtualHost"), std::string::npos) << r.output;
    }
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
