// tests/cpu/test_json.cpp: engine/json: number and string round-trips, order of members,
// writer formats, and parse errors with their line:column positions.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "engine/error.h"
#include "engine/json.h"

using unetcu::Error;
namespace json = unetcu::json;

namespace {

// The message of the Error that parse() throws, or "" when it does not throw.
std::string parse_error(const std::string& text) {
  try {
    json::parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

uint64_t bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

}  // namespace

TEST_SUITE("json") {

TEST_CASE("doubles print in shortest form and read back to the same bits") {
  CHECK(json::format_double(0.1) == "0.1");
  CHECK(json::format_double(1e-7) == "1e-07");
  CHECK(json::format_double(1.0) == "1.0");
  CHECK(json::format_double(-2.5) == "-2.5");
  CHECK(json::format_double(-0.0) == "-0.0");
  CHECK(json::format_double(100.0) == "100.0");
  // The same text Python's repr() gives.
  CHECK(json::format_double(0.0001) == "0.0001");
  CHECK(json::format_double(1e-5) == "1e-05");
  CHECK(json::format_double(0.00012345) == "0.00012345");
  CHECK(json::format_double(1e15) == "1000000000000000.0");
  CHECK(json::format_double(1e16) == "1e+16");
  CHECK(json::format_double(123456789.125) == "123456789.125");
  CHECK(json::format_double(1.2345678901234568e+17) == "1.2345678901234568e+17");
  CHECK(json::format_double(0.30000000000000004) == "0.30000000000000004");
  CHECK(json::format_double(5e-324) == "5e-324");
  CHECK(json::format_double(DBL_MAX) == "1.7976931348623157e+308");
  CHECK(json::format_double(-1.5e-300) == "-1.5e-300");

  const double cases[] = {0.1, 1e-7, 1.0 / 3.0, -0.0, 0.0, 5e-324, DBL_MIN, DBL_MAX, -DBL_MAX,
                          1e16, 123456789.125, 0.30000000000000004, 2.5e-5, 9007199254740993.0};
  for (double d : cases) {
    std::string text = json::dump(json::Value(d));
    json::Value back = json::parse(text);
    CAPTURE(text);
    REQUIRE(back.is_number());
    CHECK_FALSE(back.is_integer());
    CHECK(bits_of(back.as_double()) == bits_of(d));
  }

  // Random bit patterns cover exponents and mantissas no hand-picked list does.
  std::mt19937_64 gen(7);
  for (int i = 0; i < 20000; ++i) {
    uint64_t u = gen();
    double d;
    std::memcpy(&d, &u, sizeof d);
    if (!std::isfinite(d)) continue;
    double back = json::parse(json::format_double(d)).as_double();
    REQUIRE_MESSAGE(bits_of(back) == u, json::format_double(d));
  }
}

TEST_CASE("integers stay exact and print without a decimal point") {
  const int64_t cases[] = {0, 1, -1, 42, (int64_t(1) << 53) + 1, INT64_MAX, INT64_MIN};
  for (int64_t i : cases) {
    std::string text = json::dump(json::Value(i));
    CHECK(text == std::to_string(i));
    json::Value back = json::parse(text);
    CHECK(back.is_integer());
    CHECK(back.as_int64() == i);
  }
  CHECK(json::dump(json::Value(size_t(7))) == "7");
  CHECK(json::dump(json::Value(3)) == "3");

  // Beyond int64 the value is kept as a double.
  json::Value big = json::parse("9223372036854775808");
  CHECK_FALSE(big.is_integer());
  CHECK(big.as_double() == 9223372036854775808.0);
  CHECK_THROWS_AS(big.as_int64(), Error);

  CHECK(json::parse("3.0").as_int64() == 3);
  CHECK(json::parse("-1e3").as_int64() == -1000);
  CHECK_THROWS_WITH_AS(json::parse("1.5").as_int64(), "json: expected an integer, got 1.5", Error);
  CHECK(json::parse("-0").as_int64() == 0);
  CHECK(json::parse("1E2").as_double() == 100.0);
  CHECK(json::Value(1) == json::Value(1.0));
}

TEST_CASE("non-finite numbers are written as null") {
  CHECK(json::dump(json::Value(std::nan(""))) == "null");
  CHECK(json::dump(json::Value(INFINITY)) == "null");
  CHECK(json::dump(json::Value(-INFINITY)) == "null");
}

TEST_CASE("strings: escapes, \\u, surrogate pairs and UTF-8 passthrough") {
  CHECK(json::parse(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(json::parse(R"("\u0041\u00e9\u20AC")").as_string() == "A\xc3\xa9\xe2\x82\xac");
  CHECK(json::parse(R"("\ud83d\ude00")").as_string() == "\xf0\x9f\x98\x80");
  CHECK(json::parse("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"").as_string() ==
        "caf\xc3\xa9 \xf0\x9f\x98\x80");
  CHECK(json::parse(R"("\u0000")").as_string() == std::string(1, '\0'));

  CHECK(json::dump(json::Value("q\"b\\n\n\t\x01\x1f")) == R"("q\"b\\n\n\t\u0001\u001f")");
  CHECK(json::dump(json::Value(std::string(1, '\0'))) == R"("\u0000")");
  CHECK(json::dump(json::Value("caf\xc3\xa9")) == "\"caf\xc3\xa9\"");
  CHECK(json::dump(json::Value("a/b")) == R"("a/b")");

  // Every byte value that is legal inside a string survives a write and a read.
  std::string all;
  for (int c = 1; c < 0x80; ++c) all += char(c);
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  CHECK(json::parse(json::dump(json::Value(all))).as_string() == all);
}

TEST_CASE("objects keep insertion order; documents round-trip") {
  const std::string text =
      R"({"zeta":1,"alpha":[true,false,null],"mid":{"b":"x","a":-2.5e-10},"e":[],"o":{}})";
  json::Value v = json::parse(text);
  CHECK(json::dump(v) == text);
  REQUIRE(v.is_object());
  CHECK(v.size() == 5);
  CHECK(v.as_object()[0].first == "zeta");
  CHECK(v.at("mid").at("b").as_string() == "x");
  CHECK(v.find("nope") == nullptr);
  CHECK_THROWS_WITH_AS(v.at("nope"), "json: no key 'nope'", Error);
  CHECK(json::parse(json::dump_pretty(v)) == v);
  CHECK(json::parse(" \t\r\n 7 \n") == json::Value(7));
}

TEST_CASE("building a document in order") {
  json::Value doc;
  doc["name"] = "run1";
  doc["epochs"] = 40;
  doc["lr"] = 1e-4;
  doc["sizes"].push_back(256);
  doc["sizes"].push_back(320);
  doc["epochs"] = 50;  // replaces in place, order unchanged
  CHECK(json::dump(doc) == R"({"name":"run1","epochs":50,"lr":0.0001,"sizes":[256,320]})");
}

TEST_CASE("pretty printing") {
  json::Value v = json::parse(R"({"a":1,"b":[1,{"c":null}],"d":{},"e":[]})");
  CHECK(json::dump_pretty(v, 2) ==
        "{\n"
        "  \"a\": 1,\n"
        "  \"b\": [\n"
        "    1,\n"
        "    {\n"
        "      \"c\": null\n"
        "    }\n"
        "  ],\n"
        "  \"d\": {},\n"
        "  \"e\": []\n"
        "}");
  CHECK(json::dump_pretty(json::Value(1.5), 4) == "1.5");
}

TEST_CASE("accessors name the expected and the actual kind") {
  CHECK_THROWS_WITH_AS(json::Value("x").as_double(), "json: expected a number, got a string",
                       Error);
  CHECK_THROWS_WITH_AS(json::Value(1).as_string(), "json: expected a string, got a number", Error);
  CHECK_THROWS_WITH_AS(json::Value().as_array(), "json: expected an array, got null", Error);
  CHECK_THROWS_WITH_AS(json::Value(true).at("k"), "json: expected an object, got a boolean", Error);
}

TEST_CASE("parse errors give line:column and what was expected") {
  CHECK(parse_error("") == "json:1:1: expected a value, got end of input");
  CHECK(parse_error(R"({"a":1,})") == "json:1:8: expected a string key, got '}'");
  CHECK(parse_error("[1,2") ==
        "json:1:5: expected ',' or ']' after array element, got end of input");
  CHECK(parse_error("{\n  \"a\" 1\n}") == "json:2:7: expected ':' after object key, got '1'");
  CHECK(parse_error("[1,\n 2,\n x]") ==
        "json:3:2: expected a value (object, array, string, number, true, false or null), got 'x'");
  CHECK(parse_error("1 2") == "json:1:3: expected end of input, got '2'");
  CHECK(parse_error("01") == "json:1:2: expected no leading zero in number, got '1'");
  CHECK(parse_error("1.") == "json:1:3: expected a digit after '.', got end of input");
  CHECK(parse_error("-") == "json:1:2: expected a digit, got end of input");
  CHECK(parse_error("1e+") == "json:1:4: expected a digit in exponent, got end of input");
  CHECK(parse_error("tru") == "json:1:4: expected 'true', got end of input");
  CHECK(parse_error("nul!") == "json:1:4: expected 'null', got '!'");
  CHECK(parse_error("\"abc") == "json:1:5: expected '\"' to close the string, got end of input");
  CHECK(parse_error("\"a\tb\"") ==
        "json:1:3: expected an escape sequence for a control character in string, got byte 0x09");
  CHECK(parse_error(R"("\x")") ==
        R"(json:1:3: expected one of " \ / b f n r t u after '\', got 'x')");
  CHECK(parse_error(R"("\u12G4")") == "json:1:6: expected 4 hex digits after \\u, got 'G'");
  CHECK(parse_error(R"({"a":1,"a":2})") == "json:1:8: duplicate key 'a' in object");
  CHECK(parse_error("1e400") == "json:1:1: number out of the range of a double");
  CHECK(parse_error("[1e-400]") == "json:1:2: number out of the range of a double");
  CHECK(parse_error("[1,]") == "json:1:4: expected a value (object, array, string, number, true, "
                                "false or null), got ']'");

  // Rejected by the strict grammar, each with some message.
  const char* bad[] = {
      "NaN", "Infinity", "-Infinity", "+1", ".5", "0x10", "'single'", "// c\n1", "{a:1}",
      "[1 2]", "{\"a\" : }", R"("\ud800")", R"("\ud800\u0041")", R"("\udc00")",
      "\"\xff\"", "\"\xc0\xaf\"", "\"\xe0\x80\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
      "\"\xc3\"", "\"\xe2\x82\"", "\"\x80\"", "{\"a\":1}}", "[", "{", "{\"a\""};
  for (const char* text : bad) {
    CAPTURE(text);
    CHECK(parse_error(text) != "");
  }
}

TEST_CASE("the source name leads every parse error") {
  try {
    json::parse("{\n}x", "config.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "config.json:2:2: expected end of input, got 'x'");
  }
}

TEST_CASE("deep nesting is refused without overflowing the stack") {
  std::string deep(100000, '[');
  CHECK(parse_error(deep).find("nesting deeper than") != std::string::npos);
  std::string ok = std::string(100, '[') + std::string(100, ']');
  CHECK(parse_error(ok) == "");
}

}  // TEST_SUITE
