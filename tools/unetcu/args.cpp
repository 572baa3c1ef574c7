// tools/unetcu/args.cpp: see args.h.
#include "tools/unetcu/args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "engine/error.h"

namespace unetcu::cli {

void Args::option(const std::string& name, const std::string& default_value,
                  const std::string& help) {
  order_.push_back(name);
  opts_[name] = {default_value, help, false, false};
}

void Args::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  opts_[name] = {"false", help, true, false};
}

bool Args::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") { print_help(); return false; }
    if (a.rfind("--", 0) != 0 || a.size() == 2) { positional_.push_back(a); continue; }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1); name = name.substr(0, eq); inline_value = true;
    }
    auto it = opts_.find(name);
    if (it == opts_.end())
      fail("unetcu ", command_, ": unknown option --", name, " (see unetcu ", command_, " --help)");
    Opt& o = it->second;
    if (o.is_flag) {
      if (inline_value) fail("unetcu ", command_, ": --", name, " takes no value");
      o.value = "true";
    } else if (inline_value) {
      o.value = value;
    } else {
      if (i + 1 >= argc) fail("unetcu ", command_, ": --", name, " needs a value");
      o.value = argv[++i];
    }
    o.given = true;
  }
  return true;
}

const Args::Opt& Args::get(const std::string& name) const {
  auto it = opts_.find(name);
  if (it == opts_.end()) fail("internal: option --", name, " was not declared");
  return it->second;
}

bool Args::has(const std::string& name) const { return get(name).given; }
bool Args::flag_set(const std::string& name) const { return get(name).value == "true"; }
std::string Args::str(const std::string& name) const { return get(name).value; }

int64_t Args::integer(const std::string& name, int64_t lo, int64_t hi) const {
  const std::string& s = get(name).value;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0)
    fail("unetcu ", command_, ": --", name, " expects an integer, got '", s, "'");
  if (v < lo || v > hi)
    fail("unetcu ", command_, ": --", name, " must be between ", lo, " and ", hi, ", got ", v);
  return v;
}

double Args::number(const std::string& name, double lo, double hi) const {
  const std::string& s = get(name).value;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0')
    fail("unetcu ", command_, ": --", name, " expects a number, got '", s, "'");
  if (!(v >= lo && v <= hi))
    fail("unetcu ", command_, ": --", name, " must be between ", lo, " and ", hi, ", got ", s);
  return v;
}

std::vector<std::pair<std::string, std::string>> Args::values() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& n : order_) out.emplace_back(n, opts_.at(n).value);
  return out;
}

void Args::print_help() const {
  std::printf("usage: unetcu %s\n\noptions:\n", usage_.c_str());
  for (const auto& n : order_) {
    const Opt& o = opts_.at(n);
    std::string left = "  --" + n + (o.is_flag ? "" : " " + (o.value.empty() ? std::string("X") : o.value));
    std::printf("%-30s %s\n", left.c_str(), o.help.c_str());
  }
}

}  // namespace unetcu::cli
