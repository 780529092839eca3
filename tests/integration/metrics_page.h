// A page in Prometheus's text exposition format, parsed for the tests:
// every sample by its series ("name" or "name{label=\"value\",...}", as
// written), the TYPE of every family, and the comments.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace agtest {

struct MetricsPage {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;  // family -> "counter", ...
    std::string text;

    static MetricsPage parse(const std::string& text);

    std::optional<double> value(const std::string& series) const;
    // The sample's value, 0 when the page has no such series.
    double get(const std::string& series) const { return value(series).value_or(0); }
    bool has_family(const std::string& name) const { return types.count(name) != 0; }
    // Series of the family `name` (its samples, for a histogram its
    // _bucket/_sum/_count too) that carry the label `label`.
    int count_with_label(const std::string& name, const std::string& label) const;
};

}  // namespace agtest
