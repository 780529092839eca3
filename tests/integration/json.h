// A small, strict JSON parser (RFC 8259) for the tests: it rejects what a
// conforming parser rejects (raw control characters in strings, invalid
// escapes, invalid UTF-8, trailing garbage), and gives typed access to the
// values the tests compare.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace agtest {

class Json {
  public:
    enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

    // The document in `text`, or nullopt with `error` (if given) saying where
    // and why it is not JSON.
    static std::optional<Json> parse(const std::string& text, std::string* error = nullptr);

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::kNull; }
    bool as_bool() const { return boolean_; }
    double as_number() const { return number_; }
    int64_t as_int() const { return static_cast<int64_t>(number_); }
    const std::string& as_string() const { return string_; }
    const std::vector<Json>& items() const { return items_; }
    const std::map<std::string, Json>& members() const { return members_; }

    // The member `key` of an object; a null value when absent.
    const Json& operator[](const std::string& key) const;
    bool has(const std::string& key) const { return members_.count(key) != 0; }

  private:
    friend class JsonParser;
    Type type_ = Type::kNull;
    bool boolean_ = false;
    double number_ = 0;
    std::string string_;
    std::vector<Json> items_;
    std::map<std::string, Json> members_;
};

}  // namespace agtest
