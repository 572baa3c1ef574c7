// engine/json.cpp: the JSON value, strict recursive-descent parser and writer of json.h.
#include "engine/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/error.h"

namespace unetcu::json {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

// ---- Value ------------------------------------------------------------------------------

void Value::wrong_kind(const char* wanted) const {
  fail("json: expected ", wanted, ", got ", kind_name(kind_));
}

bool Value::as_bool() const {
  if (kind_ != Kind::Bool) wrong_kind("a boolean");
  return bool_;
}

double Value::as_double() const {
  if (kind_ != Kind::Number) wrong_kind("a number");
  return is_integer_ ? double(integer_) : number_;
}

int64_t Value::as_int64() const {
  if (kind_ != Kind::Number) wrong_kind("an integer");
  if (is_integer_) return integer_;
  // -2^63 is exact as a double, 2^63 is the first value out of range.
  if (std::trunc(number_) != number_ || number_ < -9223372036854775808.0 ||
      number_ >= 9223372036854775808.0)
    fail("json: expected an integer, got ", format_double(number_));
  return int64_t(number_);
}

const std::string& Value::as_string() const {
  if (kind_ != Kind::String) wrong_kind("a string");
  return string_;
}

const Array& Value::as_array() const {
  if (kind_ != Kind::Array) wrong_kind("an array");
  return array_;
}

Array& Value::as_array() {
  if (kind_ != Kind::Array) wrong_kind("an array");
  return array_;
}

const Object& Value::as_object() const {
  if (kind_ != Kind::Object) wrong_kind("an object");
  return object_;
}

Object& Value::as_object() {
  if (kind_ != Kind::Object) wrong_kind("an object");
  return object_;
}

const Value* Value::find(std::string_view key) const {
  for (const auto& [k, v] : as_object())
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(std::string_view key) const {
  const Value* v = find(key);
  if (!v) fail("json: no key '", key, "'");
  return *v;
}

Value& Value::operator[](std::string_view key) {
  if (kind_ == Kind::Null) kind_ = Kind::Object;
  for (auto& [k, v] : as_object())
    if (k == key) return v;
  object_.emplace_back(std::string(key), Value());
  return object_.back().second;
}

void Value::push_back(Value v) {
  if (kind_ == Kind::Null) kind_ = Kind::Array;
  as_array().push_back(std::move(v));
}

size_t Value::size() const {
  if (kind_ == Kind::Array) return array_.size();
  if (kind_ == Kind::Object) return object_.size();
  wrong_kind("an array or an object");
}

bool Value::operator==(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::Null: return true;
    case Kind::Bool: return bool_ == other.bool_;
    case Kind::Number:
      if (is_integer_ && other.is_integer_) return integer_ == other.integer_;
      return as_double() == other.as_double();
    case Kind::String: return string_ == other.string_;
    case Kind::Array: return array_ == other.array_;
    case Kind::Object: return object_ == other.object_;
  }
  return false;
}

// ---- parser -----------------------------------------------------------------------------

namespace {

// Nesting deeper than this is refused so that hostile input cannot overflow the stack.
constexpr int kMaxDepth = 256;

class Parser {
 public:
  Parser(std::string_view text, const std::string& source) : s_(text), source_(source) {}

  Value parse_document() {
    skip_space();
    Value v = parse_value(0);
    skip_space();
    if (pos_ != s_.size()) expected("end of input");
    return v;
  }

 private:
  bool at_end() const { return pos_ >= s_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(s_[pos_]); }

  // Messages carry the position as line:column (both from 1; columns count bytes).
  [[noreturn]] void fail_here(const std::string& message) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    fail(source_, ":", line, ":", column, ": ", message);
  }

  [[noreturn]] void expected(const std::string& what) const {
    fail_here("expected " + what + ", got " + found());
  }

  std::string found() const {
    if (at_end()) return "end of input";
    unsigned char c = peek();
    if (c >= 0x20 && c < 0x7f) return std::string("'") + char(c) + "'";
    char hex[16];
    std::snprintf(hex, sizeof hex, "byte 0x%02x", c);
    return hex;
  }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
      ++pos_;
  }

  void expect_literal(const char* word) {
    size_t n = std::strlen(word);
    for (size_t i = 0; i < n; ++i, ++pos_)
      if (at_end() || s_[pos_] != word[i]) expected(std::string("'") + word + "'");
  }

  Value parse_value(int depth) {
    if (at_end()) expected("a value");
    switch (peek()) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Value(parse_string());
      case 't': expect_literal("true"); return Value(true);
      case 'f': expect_literal("false"); return Value(false);
      case 'n': expect_literal("null"); return Value();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number();
        expected("a value (object, array, string, number, true, false or null)");
    }
  }

  void check_depth(int depth) const {
    if (depth > kMaxDepth)
      fail_here("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
  }

  Value parse_object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Value obj{Object{}};
    Object& members = obj.as_object();
    skip_space();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return obj;
    }
    for (;;) {
      skip_space();
      if (at_end() || peek() != '"') expected("a string key");
      size_t key_pos = pos_;
      std::string key = parse_string();
      for (const auto& member : members) {
        if (member.first == key) {
          pos_ = key_pos;
          fail_here("duplicate key '" + key + "' in object");
        }
      }
      skip_space();
      if (at_end() || peek() != ':') expected("':' after object key");
      ++pos_;
      skip_space();
      Value v = parse_value(depth);
      members.emplace_back(std::move(key), std::move(v));
      skip_space();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == '}') {
        ++pos_;
        return obj;
      }
      expected("',' or '}' after object member");
    }
  }

  Value parse_array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Value arr{Array{}};
    Array& elements = arr.as_array();
    skip_space();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return arr;
    }
    for (;;) {
      skip_space();
      elements.push_back(parse_value(depth));
      skip_space();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      if (!at_end() && peek() == ']') {
        ++pos_;
        return arr;
      }
      expected("',' or ']' after array element");
    }
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  Value parse_number() {
    size_t start = pos_;
    auto digits = [&](const char* what) {
      if (at_end() || peek() < '0' || peek() > '9') expected(what);
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
    };
    if (peek() == '-') ++pos_;
    if (!at_end() && peek() == '0') {
      ++pos_;
      if (!at_end() && peek() >= '0' && peek() <= '9') expected("no leading zero in number");
    } else {
      digits("a digit");
    }
    bool integral = true;
    if (!at_end() && peek() == '.') {
      ++pos_;
      integral = false;
      digits("a digit after '.'");
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      integral = false;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      digits("a digit in exponent");
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (integral) {
      int64_t i = 0;
      auto [end, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && end == last) return Value(i);
      // Too large for int64: fall through and keep it as a double.
    }
    double d = 0;
    auto [end, ec] = std::from_chars(first, last, d);
    if (ec != std::errc() || end != last) {
      pos_ = start;
      fail_here("number out of the range of a double");
    }
    return Value(d);
  }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      if (at_end()) expected("4 hex digits after \\u");
      unsigned char c = peek();
      unsigned digit;
      if (c >= '0' && c <= '9') digit = c - '0';
      else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
      else expected("4 hex digits after \\u");
      code = code * 16 + digit;
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xc0 | (code >> 6));
      out += char(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += char(0xe0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3f));
      out += char(0x80 | (code & 0x3f));
    } else {
      out += char(0xf0 | (code >> 18));
      out += char(0x80 | ((code >> 12) & 0x3f));
      out += char(0x80 | ((code >> 6) & 0x3f));
      out += char(0x80 | (code & 0x3f));
    }
  }

  // Copies one well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF).
  void copy_utf8_sequence(std::string& out) {
    const char* bad = "valid UTF-8 in string";
    unsigned char lead = peek();
    int extra;
    unsigned code, min_code;
    if (lead >= 0xc2 && lead <= 0xdf) { extra = 1; code = lead & 0x1f; min_code = 0x80; }
    else if (lead >= 0xe0 && lead <= 0xef) { extra = 2; code = lead & 0x0f; min_code = 0x800; }
    else if (lead >= 0xf0 && lead <= 0xf4) { extra = 3; code = lead & 0x07; min_code = 0x10000; }
    else expected(bad);
    size_t start = pos_;
    for (int i = 1; i <= extra; ++i) {
      if (start + i >= s_.size() || (static_cast<unsigned char>(s_[start + i]) & 0xc0) != 0x80) {
        pos_ = start;
        expected(bad);
      }
      code = (code << 6) | (static_cast<unsigned char>(s_[start + i]) & 0x3f);
    }
    if (code < min_code || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) expected(bad);
    out.append(s_.data() + start, size_t(extra) + 1);
    pos_ = start + size_t(extra) + 1;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) expected("'\"' to close the string");
      unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) expected("an escape sequence for a control character in string");
      if (c >= 0x80) {
        copy_utf8_sequence(out);
        continue;
      }
      if (c != '\\') {
        out += char(c);
        ++pos_;
        continue;
      }
      ++pos_;
      if (at_end()) expected("an escape character after '\\'");
      char e = s_[pos_];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          size_t escape_pos = pos_ - 1;
          ++pos_;
          unsigned code = parse_hex4();
          if (code >= 0xdc00 && code <= 0xdfff) {
            pos_ = escape_pos;
            expected("a high surrogate before a low surrogate \\u escape");
          }
          if (code >= 0xd800 && code <= 0xdbff) {
            if (pos_ + 1 >= s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              expected("a \\u low surrogate after a high surrogate");
            pos_ += 2;
            unsigned low = parse_hex4();
            if (low < 0xdc00 || low > 0xdfff) {
              pos_ -= 6;
              expected("a \\u low surrogate after a high surrogate");
            }
            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, code);
          continue;  // parse_hex4 already moved past the digits
        }
        default: expected("one of \" \\ / b f n r t u after '\\'");
      }
      ++pos_;
    }
  }

  std::string_view s_;
  const std::string& source_;
  size_t pos_ = 0;
};

// ---- writer -----------------------------------------------------------------------------

void write_string(std::string& out, const std::string& s) {
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", c);
          out += esc;
        } else {
          out += ch;  // UTF-8 passes through unchanged
        }
    }
  }
  out += '"';
}

// indent < 0: compact. Otherwise newline + indent*level spaces between items.
void write_value(std::string& out, const Value& v, int indent, int level) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(size_t(indent) * size_t(lvl), ' ');
  };
  switch (v.kind()) {
    case Kind::Null: out += "null"; break;
    case Kind::Bool: out += v.as_bool() ? "true" : "false"; break;
    case Kind::Number:
      out += v.is_integer() ? std::to_string(v.as_int64()) : format_double(v.as_double());
      break;
    case Kind::String: write_string(out, v.as_string()); break;
    case Kind::Array: {
      const Array& a = v.as_array();
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        write_value(out, a[i], indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      break;
    }
    case Kind::Object: {
      const Object& o = v.as_object();
      out += '{';
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        write_string(out, o[i].first);
        out += indent < 0 ? ":" : ": ";
        write_value(out, o[i].second, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      break;
    }
  }
}

}  // namespace

Value parse(std::string_view text, const std::string& source) {
  return Parser(text, source).parse_document();
}

std::string dump(const Value& v) {
  std::string out;
  write_value(out, v, -1, 0);
  return out;
}

std::string dump_pretty(const Value& v, int indent) {
  std::string out;
  write_value(out, v, indent < 0 ? 0 : indent, 0);
  return out;
}

// The digits are the shortest that round-trip (std::to_chars); the layout follows Python's
// repr, so files read the same as those written by the reference scripts: plain decimals for
// exponents -4..15 ("0.0001", "1.0"), scientific otherwise ("1e-05", "1e+16").
std::string format_double(double d) {
  if (!std::isfinite(d)) return "null";
  char buf[64];
  char* end = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific).ptr;
  std::string sci(buf, end);  // "-1.2345e-07"
  size_t e = sci.find('e');
  std::string out = sci[0] == '-' ? "-" : "";
  std::string digits;
  for (size_t i = out.size(); i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  int exponent = std::stoi(sci.substr(e + 1));

  if (exponent < -4 || exponent >= 16) {
    out += digits[0];
    if (digits.size() > 1) out += "." + digits.substr(1);
    return out + sci.substr(e);  // "e-07": sign and at least two digits, as repr writes it
  }
  if (exponent < 0) return out + "0." + std::string(size_t(-exponent - 1), '0') + digits;
  size_t int_len = size_t(exponent) + 1;
  if (digits.size() <= int_len)
    return out + digits + std::string(int_len - digits.size(), '0') + ".0";
  return out + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

}  // namespace unetcu::json
