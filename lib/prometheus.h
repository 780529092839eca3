// Prometheus's text exposition format, version 0.0.4: metric families
// (# HELP and # TYPE lines, then samples), label values escaped, histograms
// as cumulative `_bucket` lines ending with le="+Inf", `_sum` and `_count`.
// Generic: it knows nothing of this module's metrics (metrics.h names them).
//
// The stats histograms (stats.h) have log2-microsecond buckets; a histogram
// is exposed with the upper bounds of buckets kFirstBound..kLastBound as its
// `le` values, 2^3 us = 8 us to 2^26 us = 67.108864 s (so 10 us to 60 s are
// covered), written in seconds as exact decimals ("0.000008" ...
// "67.108864"). A bucket's upper bound is exclusive in stats.h and `le`
// means "at most": durations are recorded in whole microseconds (cut, not
// rounded), so a sample below 2^i us is exactly one at most 2^i us of real
// time. Samples of 2^26 us and more are in +Inf only.
//
// Thread contract: a Writer belongs to one thread; the free functions are
// pure. Everything may throw std::bad_alloc (callers at the C boundary
// catch it).
#ifndef ABORTGUARD_PROMETHEUS_H
#define ABORTGUARD_PROMETHEUS_H

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "stats.h"

namespace abortguard {
namespace prometheus {

// The exposed bucket bounds, as bucket indices of stats.h.
constexpr uint32_t kFirstBound = 3;  // 8 us
constexpr uint32_t kLastBound = 26;  // 67.108864 s
static_assert(kLastBound + 1 < stats::kBuckets, "the last bound must not be the open bucket");

// Where the text goes.
class Sink {
  public:
    virtual ~Sink() = default;
    virtual void write(std::string_view text) = 0;
};

class StringSink : public Sink {
  public:
    void write(std::string_view text) override { text_.append(text); }
    const std::string& text() const { return text_; }

  private:
    std::string text_;
};

enum class Type { kCounter, kGauge, kHistogram };

struct Label {
    std::string_view name;   // a valid label name: the caller's literal
    std::string_view value;  // anything: escaped when written
};

// A label value as the format wants it: backslash, double quote and line
// feed escaped (\\ \" \n); bytes that are not UTF-8 (Prometheus rejects the
// whole scrape for one) replaced by U+FFFD.
std::string escape_label_value(std::string_view value);
// HELP text: backslash and line feed escaped.
std::string escape_help(std::string_view help);
// Whole microseconds as seconds, exact and without trailing zeros:
// 0 -> "0", 1500 -> "0.0015", 67108864 -> "67.108864".
std::string seconds(uint64_t us);

class Writer {
  public:
    explicit Writer(Sink& sink) : sink_(sink) {}

    // "# HELP name help" and "# TYPE name type": once per family, before
    // its samples.
    void family(std::string_view name, Type type, std::string_view help);
    // One sample line: name{labels} value.
    void sample(std::string_view name, std::initializer_list<Label> labels, std::string_view value);
    void sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value);
    // A histogram's samples (its family line is the caller's): name_bucket
    // for every exposed bound and +Inf, cumulative; name_sum in seconds;
    // name_count, equal to the +Inf bucket (both summed from the buckets,
    // so they agree even when the snapshot was taken while counting).
    void histogram(std::string_view name, const stats::HistogramSnapshot& h);
    // A comment line ("# text"); the format ignores it.
    void comment(std::string_view text);

  private:
    void labels_and_value(std::initializer_list<Label> labels, std::string_view value);

    Sink& sink_;
    std::string line_;  // reused, so a page costs few allocations
};

}  // namespace prometheus
}  // namespace abortguard

#endif  // ABORTGUARD_PROMETHEUS_H
