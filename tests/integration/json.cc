#include "json.h"

#include <cstdlib>
#include <stdexcept>

namespace agtest {

// Recursive descent over the text; throws std::runtime_error on bad input,
// which parse() turns into nullopt.
class JsonParser {
  public:
    explicit JsonParser(const std::string& text) : s_(text) {}

    Json document() {
        Json v = value(0);
        skip_space();
        if (pos_ != s_.size())
            fail("trailing characters");
        return v;
    }

  private:
    static constexpr int kMaxDepth = 64;

    [[noreturn]] void fail(const std::string& why) {
        throw std::runtime_error(why + " at offset " + std::to_string(pos_));
    }

    void skip_space() {
        while (pos_ < s_.size() &&
               (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }

    char peek() {
        skip_space();
        if (pos_ >= s_.size())
            fail("unexpected end");
        return s_[pos_];
    }

    void expect(char c) {
        if (peek() != c)
            fail(std::string("expected '") + c + "'");
        ++pos_;
    }

    bool literal(const char* word) {
        const std::string w(word);
        if (s_.compare(pos_, w.size(), w) != 0)
            return false;
        pos_ += w.size();
        return true;
    }

    Json value(int depth) {
        if (depth > kMaxDepth)
            fail("nested too deeply");
        Json v;
        const char c = peek();
        if (c == '{') {
            object(&v, depth);
        } else if (c == '[') {
            array(&v, depth);
        } else if (c == '"') {
            v.type_ = Json::Type::kString;
            v.string_ = string();
        } else if (literal("true")) {
            v.type_ = Json::Type::kBool;
            v.boolean_ = true;
        } else if (literal("false")) {
            v.type_ = Json::Type::kBool;
        } else if (literal("null")) {
            v.type_ = Json::Type::kNull;
        } else {
            v.type_ = Json::Type::kNumber;
            v.number_ = number();
        }
        return v;
    }

    void object(Json* v, int depth) {
        v->type_ = Json::Type::kObject;
        expect('{');
        if (peek() == '}') {
            ++pos_;
            return;
        }
        for (;;) {
            if (peek() != '"')
                fail("expected a member name");
            std::string key = string();
            expect(':');
            v->members_[key] = value(depth + 1);
            if (peek() == '}') {
                ++pos_;
                return;
            }
            expect(',');
        }
    }

    void array(Json* v, int depth) {
        v->type_ = Json::Type::kArray;
        expect('[');
        if (peek() == ']') {
            ++pos_;
            return;
        }
        for (;;) {
            v->items_.push_back(value(depth + 1));
            if (peek() == ']') {
                ++pos_;
                return;
            }
            expect(',');
        }
    }

    double number() {
        const size_t start = pos_;
        auto digits = [&] {
            const size_t from = pos_;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9')
                ++pos_;
            if (pos_ == from)
                fail("expected a digit");
        };
        if (s_[pos_] == '-')
            ++pos_;
        if (pos_ < s_.size() && s_[pos_] == '0')
            ++pos_;
        else
            digits();
        if (pos_ < s_.size() && s_[pos_] == '.') {
            ++pos_;
            digits();
        }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-'))
                ++pos_;
            digits();
        }
        return std::strtod(s_.substr(start, pos_ - start).c_str(), nullptr);
    }

    unsigned hex4() {
        if (pos_ + 4 > s_.size())
            fail("short \\u escape");
        unsigned v = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= static_cast<unsigned>(c - 'A' + 10);
            else
                fail("bad \\u escape");
        }
        return v;
    }

    static void append_utf8(std::string* out, unsigned cp) {
        if (cp < 0x80) {
            *out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            *out += static_cast<char>(0xC0 | (cp >> 6));
            *out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *out += static_cast<char>(0xE0 | (cp >> 12));
            *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            *out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            *out += static_cast<char>(0xF0 | (cp >> 18));
            *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            *out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    void escape(std::string* out) {
        const char c = s_[pos_++];
        switch (c) {
            case '"':
            case '\\':
            case '/':
                *out += c;
                return;
            case 'b':
                *out += '\b';
                return;
            case 'f':
                *out += '\f';
                return;
            case 'n':
                *out += '\n';
                return;
            case 'r':
                *out += '\r';
                return;
            case 't':
                *out += '\t';
                return;
            case 'u': {
                unsigned cp = hex4();
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (!literal("\\u"))
                        fail("lone high surrogate");
                    const unsigned lo = hex4();
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        fail("bad low surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    fail("lone low surrogate");
                }
                append_utf8(out, cp);
                return;
            }
            default:
                fail("bad escape");
        }
    }

    // One UTF-8 sequence starting at pos_, checked (no overlongs, no
    // surrogates, nothing past U+10FFFF).
    void utf8(std::string* out) {
        const auto b = static_cast<unsigned char>(s_[pos_]);
        const size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
        if (n == 0 || b > 0xF4 || pos_ + n > s_.size())
            fail("invalid UTF-8");
        for (size_t i = 1; i < n; ++i) {
            if ((static_cast<unsigned char>(s_[pos_ + i]) & 0xC0) != 0x80)
                fail("invalid UTF-8");
        }
        const auto b1 = static_cast<unsigned char>(s_[pos_ + 1]);
        if ((b == 0xE0 && b1 < 0xA0) || (b == 0xED && b1 > 0x9F) || (b == 0xF0 && b1 < 0x90) ||
            (b == 0xF4 && b1 > 0x8F))
            fail("invalid UTF-8");
        out->append(s_, pos_, n);
        pos_ += n;
    }

    std::string string() {
        std::string out;
        ++pos_;  // the opening quote
        for (;;) {
            if (pos_ >= s_.size())
                fail("unterminated string");
            const auto c = static_cast<unsigned char>(s_[pos_]);
            if (c == '"') {
                ++pos_;
                return out;
            }
            if (c < 0x20)
                fail("raw control character in a string");
            if (c == '\\') {
                ++pos_;
                if (pos_ >= s_.size())
                    fail("unterminated escape");
                escape(&out);
            } else if (c >= 0x80) {
                utf8(&out);
            } else {
                out += static_cast<char>(c);
                ++pos_;
            }
        }
    }

    const std::string& s_;
    size_t pos_ = 0;
};

std::optional<Json> Json::parse(const std::string& text, std::string* error) {
    try {
        return JsonParser(text).document();
    } catch (const std::exception& e) {
        if (error)
            *error = e.what();
        return std::nullopt;
    }
}

const Json& Json::operator[](const std::string& key) const {
    static const Json null_value;
    auto it = members_.find(key);
    return it == members_.end() ? null_value : it->second;
}

}  // namespace agtest
