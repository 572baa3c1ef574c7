// engine/json.h: a small JSON library (RFC 8259) for config.json, metrics.jsonl, test.json and
// safetensors headers.
//
// Conventions:
// - Objects keep their members in insertion order (files we write are stable and readable);
//   lookups are linear, which is fine for the few hundred keys we ever hold.
// - A number is a double; a number written without fraction or exponent that fits in int64
//   is also kept exactly as an integer, so byte offsets and counts above 2^53 survive.
// - The parser is strict: no comments, trailing commas, NaN, duplicate keys, invalid UTF-8,
//   unpaired surrogates, or numbers beyond the range of a double (1e400, 1e-400).
//   Errors read "<source>:<line>:<column>: expected X, got Y".
// - The writer prints integers without a decimal point and doubles with the fewest digits
//   that read back to the same bits, laid out as Python's repr() does ("0.1", "1.0", "1e-07"),
//   so a double always keeps a '.' or an exponent and reads back as a double.
//   JSON has no NaN or infinity: they are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace unetcu::json {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;

enum class Kind { Null, Bool, Number, String, Array, Object };
const char* kind_name(Kind kind);

class Value {
 public:
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : kind_(Kind::Bool), bool_(b) {}
  Value(double d) : kind_(Kind::Number), number_(d) {}
  template <typename Int,
            std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
  Value(Int i) : kind_(Kind::Number), number_(double(i)) {
    // Unsigned values beyond int64 are rare (none in our files); they stay doubles.
    if (std::is_signed_v<Int> || uint64_t(i) <= uint64_t(INT64_MAX)) {
      is_integer_ = true;
      integer_ = int64_t(i);
    }
  }
  Value(const char* s) : kind_(Kind::String), string_(s) {}
  Value(std::string s) : kind_(Kind::String), string_(std::move(s)) {}
  Value(json::Array a) : kind_(Kind::Array), array_(std::move(a)) {}
  Value(json::Object o) : kind_(Kind::Object), object_(std::move(o)) {}

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_integer() const { return kind_ == Kind::Number && is_integer_; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }

  // Each accessor throws unetcu::Error naming the expected and the actual kind.
  bool as_bool() const;
  double as_double() const;
  // Integers exactly; a double only if it is integral and in range (1.0 yes, 1.5 no).
  int64_t as_int64() const;
  const std::string& as_string() const;
  const json::Array& as_array() const;
  json::Array& as_array();
  const json::Object& as_object() const;
  json::Object& as_object();

  // Object access. find() returns nullptr for a missing key; at() throws. operator[] turns a
  // null into an object and appends the key if missing, so documents can be built in order.
  const Value* find(std::string_view key) const;
  const Value& at(std::string_view key) const;
  Value& operator[](std::string_view key);
  // Appends to an array (a null becomes an empty array first).
  void push_back(Value v);
  // Number of elements of an array or members of an object.
  size_t size() const;

  // Structural equality; numbers compare by value (1 == 1.0), objects in member order.
  bool operator==(const Value& other) const;
  bool operator!=(const Value& other) const { return !(*this == other); }

 private:
  [[noreturn]] void wrong_kind(const char* wanted) const;

  Kind kind_ = Kind::Null;
  bool bool_ = false;
  bool is_integer_ = false;
  double number_ = 0;
  int64_t integer_ = 0;
  std::string string_;
  json::Array array_;
  json::Object object_;
};

// Parses one JSON value surrounded by optional whitespace. `source` names the text in error
// messages (a file name, or "config.json header").
Value parse(std::string_view text, const std::string& source = "json");

// Compact form: no whitespace at all.
std::string dump(const Value& v);
// Indented form, one member or element per line, `indent` spaces per level.
std::string dump_pretty(const Value& v, int indent = 2);

// A double as the shortest text that parses back to the same bits, in Python's repr() layout
// ("0.1", "0.0001", "1e-07", "1e+16", "-0.0"); "null" for NaN and infinities.
std::string format_double(double d);

}  // namespace unetcu::json
