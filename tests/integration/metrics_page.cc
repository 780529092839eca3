#include "metrics_page.h"

#include <cstdlib>
#include <sstream>

namespace agtest {

MetricsPage MetricsPage::parse(const std::string& text) {
    MetricsPage p;
    p.text = text;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("# TYPE ", 0) == 0) {
            const std::string rest = line.substr(7);
            const size_t space = rest.find(' ');
            p.types[rest.substr(0, space)] = rest.substr(space + 1);
        } else if (!line.empty() && line[0] != '#') {
            const size_t space = line.rfind(' ');
            p.samples[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
        }
    }
    return p;
}

std::optional<double> MetricsPage::value(const std::string& series) const {
    const auto it = samples.find(series);
    if (it == samples.end())
        return std::nullopt;
    return it->second;
}

int MetricsPage::count_with_label(const std::string& name, const std::string& label) const {
    int n = 0;
    for (const auto& [series, v] : samples) {
        (void)v;
        const bool labelled = series.find("{" + label + "=\"") != std::string::npos ||
                              series.find("," + label + "=\"") != std::string::npos;
        if (series.rfind(name, 0) == 0 && labelled)
            ++n;
    }
    return n;
}

}  // namespace agtest
