// The exposition writer (prometheus.h): label and HELP escaping, exact
// seconds, family and sample lines, and histograms as cumulative buckets
// ending with le="+Inf", with _sum in seconds and _count equal to +Inf.
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "prometheus.h"

namespace abortguard {
namespace prometheus {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        out.push_back(line);
    return out;
}

TEST(Prometheus, LabelValuesEscapeBackslashQuoteAndNewline) {
    EXPECT_EQ(escape_label_value("plain-handler"), "plain-handler");
    EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
    EXPECT_EQ(escape_label_value("say \"hi\""), "say \\\"hi\\\"");
    EXPECT_EQ(escape_label_value("two\nlines"), "two\\nlines");
    EXPECT_EQ(escape_label_value(""), "");
    // Other characters, tabs and non-ASCII UTF-8 included, pass as they are.
    EXPECT_EQ(escape_label_value("t\tab {x=1} \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"),
              "t\tab {x=1} \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
}

TEST(Prometheus, LabelValuesReplaceBytesThatAreNotUtf8) {
    const std::string fffd = "\xEF\xBF\xBD";
    EXPECT_EQ(escape_label_value("a\xFF"
                                 "b"),
              "a" + fffd + "b");
    EXPECT_EQ(escape_label_value("\xC3"), fffd);                                   // cut short
    EXPECT_EQ(escape_label_value("\xC0\xAF"), fffd + fffd);                        // overlong '/'
    EXPECT_EQ(escape_label_value("\xED\xA0\x80"), fffd + fffd + fffd);             // a surrogate
    EXPECT_EQ(escape_label_value("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // > U+10FFFF
    // A backslash right after a bad byte is still escaped.
    EXPECT_EQ(escape_label_value("\x80\\"), fffd + "\\\\");
}

TEST(Prometheus, HelpEscapesBackslashAndNewlineOnly) {
    EXPECT_EQ(escape_help("a \"quoted\" \\ word\nnext"), "a \"quoted\" \\\\ word\\nnext");
}

TEST(Prometheus, SecondsAreExactDecimals) {
    EXPECT_EQ(seconds(0), "0");
    EXPECT_EQ(seconds(1), "0.000001");
    EXPECT_EQ(seconds(8), "0.000008");
    EXPECT_EQ(seconds(1500), "0.0015");
    EXPECT_EQ(seconds(1000000), "1");
    EXPECT_EQ(seconds(2500000), "2.5");
    EXPECT_EQ(seconds(67108864), "67.108864");
    EXPECT_EQ(seconds(UINT64_MAX), "18446744073709.551615");
}

TEST(Prometheus, FamilyAndSampleLines) {
    StringSink sink;
    Writer w(sink);
    w.family("x_requests_total", Type::kCounter, "Requests.\nSecond \\ line.");
    w.sample("x_requests_total", {}, 42);
    w.sample("x_requests_total", {{"reason", "fin"}, {"handler", "a\"b"}}, 7);
    w.family("x_in_flight", Type::kGauge, "Now.");
    w.sample("x_in_flight", {}, "3");
    w.comment("a note");
    EXPECT_EQ(sink.text(),
              "# HELP x_requests_total Requests.\\nSecond \\\\ line.\n"
              "# TYPE x_requests_total counter\n"
              "x_requests_total 42\n"
              "x_requests_total{reason=\"fin\",handler=\"a\\\"b\"} 7\n"
              "# HELP x_in_flight Now.\n"
              "# TYPE x_in_flight gauge\n"
              "x_in_flight 3\n"
              "# a note\n");
}

TEST(Prometheus, HistogramBucketsAreCumulativeWithInfSumAndCount) {
    stats::HistogramSnapshot h;
    h.buckets[0] = 1;                     // below 1 us: below the first exposed bound too
    h.buckets[3] = 2;                     // [4, 8) us: le 0.000008
    h.buckets[4] = 4;                     // [8, 16) us
    h.buckets[20] = 8;                    // [0.52, 1.05) s: le 1.048576
    h.buckets[27] = 16;                   // [67, 134) s: beyond the last bound, +Inf only
    h.buckets[stats::kBuckets - 1] = 32;  // the open bucket
    h.count = 60;  // one more than the buckets: a snapshot taken while counting
    h.sum_us = 3500000;
    StringSink sink;
    Writer w(sink);
    w.histogram("x_seconds", h);
    const std::vector<std::string> lines = lines_of(sink.text());
    ASSERT_EQ(lines.size(), (kLastBound - kFirstBound + 1) + 1 + 2);
    EXPECT_EQ(lines.front(), "x_seconds_bucket{le=\"0.000008\"} 3");
    EXPECT_EQ(lines[1], "x_seconds_bucket{le=\"0.000016\"} 7");
    EXPECT_EQ(lines[2], "x_seconds_bucket{le=\"0.000032\"} 7");
    EXPECT_NE(sink.text().find("x_seconds_bucket{le=\"0.524288\"} 7\n"), std::string::npos);
    EXPECT_NE(sink.text().find("x_seconds_bucket{le=\"1.048576\"} 15\n"), std::string::npos);
    const size_t last = kLastBound - kFirstBound;
    EXPECT_EQ(lines[last], "x_seconds_bucket{le=\"67.108864\"} 15");
    EXPECT_EQ(lines[last + 1], "x_seconds_bucket{le=\"+Inf\"} 63");
    EXPECT_EQ(lines[last + 2], "x_seconds_sum 3.5");
    // _count is the +Inf bucket, not the separately read count.
    EXPECT_EQ(lines[last + 3], "x_seconds_count 63");
    // Cumulative: never decreasing.
    uint64_t previous = 0;
    for (size_t i = 0; i <= last + 1; ++i) {
        const uint64_t v = std::stoull(lines[i].substr(lines[i].rfind(' ') + 1));
        EXPECT_GE(v, previous) << lines[i];
        previous = v;
    }
}

TEST(Prometheus, ExposedBoundsCoverTenMicrosecondsToAMinute) {
    EXPECT_LE(stats::bucket_upper_us(kFirstBound), 10u);
    EXPECT_GE(stats::bucket_upper_us(kLastBound), 60000000u);
    // ... and the +Inf bucket starts where the open-ended one would.
    EXPECT_NE(stats::bucket_upper_us(kLastBound), 0u);
}

TEST(Prometheus, AnEmptyHistogramIsAllZeros) {
    StringSink sink;
    Writer w(sink);
    w.histogram("x_seconds", stats::HistogramSnapshot{});
    for (const std::string& line : lines_of(sink.text()))
        EXPECT_EQ(line.substr(line.rfind(' ') + 1), "0") << line;
}

}  // namespace
}  // namespace prometheus
}  // namespace abortguard
