// tools/unetcu/args.h: a small command-line parser: positional arguments plus --name value
// and --flag options, each declared with a default and a help line, so `unetcu CMD --help`
// and the error for an unknown or malformed option come from one table.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace unetcu::cli {

class Args {
 public:
  Args(std::string command, std::string usage) : command_(std::move(command)), usage_(std::move(usage)) {}

  // Declarations (before parse).
  void option(const std::string& name, const std::string& default_value, const std::string& help);
  void flag(const std::string& name, const std::string& help);
  // Parses argv[first..]; returns false when --help was asked (help already printed).
  bool parse(int argc, char** argv, int first);

  const std::vector<std::string>& positional() const { return positional_; }
  bool has(const std::string& name) const;  // given on the command line
  bool flag_set(const std::string& name) const;
  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t lo, int64_t hi) const;
  double number(const std::string& name, double lo, double hi) const;
  // Every option's final value, for config.json.
  std::vector<std::pair<std::string, std::string>> values() const;
  void print_help() const;

 private:
  struct Opt { std::string value, help; bool is_flag = false, given = false; };
  const Opt& get(const std::string& name) const;
  std::string command_, usage_;
  std::vector<std::string> order_;
  std::map<std::string, Opt> opts_;
  std::vector<std::string> positional_;
};

}  // namespace unetcu::cli
