#include "prometheus.h"

#include <inttypes.h>
#include <stdio.h>

namespace abortguard {
namespace prometheus {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Bytes of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0.
size_t utf8_length(std::string_view s, size_t i) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const auto cont = [&](size_t k) { return i + k < s.size() && (byte(k) & 0xC0) == 0x80; };
    const unsigned char b = byte(0);
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return cont(1) ? 2 : 0;
    if (b >= 0xE0 && b <= 0xEF) {
        if (!cont(1) || !cont(2))
            return 0;
        if ((b == 0xE0 && byte(1) < 0xA0) || (b == 0xED && byte(1) > 0x9F))
            return 0;  // overlong; surrogate
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3))
            return 0;
        if ((b == 0xF0 && byte(1) < 0x90) || (b == 0xF4 && byte(1) > 0x8F))
            return 0;  // overlong; above U+10FFFF
        return 4;
    }
    return 0;
}

const char* type_name(Type type) {
    switch (type) {
        case Type::kCounter:
            return "counter";
        case Type::kGauge:
            return "gauge";
        case Type::kHistogram:
            return "histogram";
    }
    return "untyped";
}

std::string decimal(uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return buf;
}

}  // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size();) {
        const char c = value[i];
        const size_t n = utf8_length(value, i);
        if (n == 0) {
            out += kReplacement;
            ++i;
        } else if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out.append(value.substr(i, n));
        }
        i += n;
    }
    return out;
}

std::string escape_help(std::string_view help) {
    std::string out;
    out.reserve(help.size());
    for (const char c : help) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string seconds(uint64_t us) {
    std::string out = decimal(us / 1000000);
    uint64_t frac = us % 1000000;
    if (frac == 0)
        return out;
    char digits[8];
    snprintf(digits, sizeof digits, "%06" PRIu64, frac);
    std::string_view f(digits, 6);
    while (f.back() == '0')
        f.remove_suffix(1);
    out += '.';
    out.append(f);
    return out;
}

void Writer::family(std::string_view name, Type type, std::string_view help) {
    line_.assign("# HELP ").append(name).append(" ").append(escape_help(help)).append("\n");
    line_.append("# TYPE ").append(name).append(" ").append(type_name(type)).append("\n");
    sink_.write(line_);
}

void Writer::sample(std::string_view name, std::initializer_list<Label> labels,
                    std::string_view value) {
    line_.assign(name);
    labels_and_value(labels, value);
    sink_.write(line_);
}

void Writer::sample(std::string_view name, std::initializer_list<Label> labels, uint64_t value) {
    sample(name, labels, decimal(value));
}

void Writer::labels_and_value(std::initializer_list<Label> labels, std::string_view value) {
    const char* sep = "{";
    for (const Label& l : labels) {
        line_.append(sep).append(l.name).append("=\"");
        line_.append(escape_label_value(l.value)).append("\"");
        sep = ",";
    }
    if (labels.size() != 0)
        line_ += '}';
    line_.append(" ").append(value).append("\n");
}

void Writer::histogram(std::string_view name, const stats::HistogramSnapshot& h) {
    const std::string bucket = std::string(name) + "_bucket";
    uint64_t below = 0;
    for (uint32_t b = 0; b < stats::kBuckets; ++b) {
        below += h.buckets[b];
        if (b >= kFirstBound && b <= kLastBound)
            sample(bucket, {{"le", seconds(stats::bucket_upper_us(b))}}, below);
    }
    sample(bucket, {{"le", "+Inf"}}, below);
    sample(std::string(name) + "_sum", {}, seconds(h.sum_us));
    sample(std::string(name) + "_count", {}, below);
}

void Writer::comment(std::string_view text) {
    line_.assign("# ").append(text).append("\n");
    sink_.write(line_);
}

}  // namespace prometheus
}  // namespace abortguard
