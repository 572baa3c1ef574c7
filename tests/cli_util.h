// tests/cli_util.h: running the unetcu tool from a test, and a temporary folder that cleans up
// after itself.
#pragma once

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace unetcu::test {

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// Runs the tool with `args`, in folder `cwd` when given (the demo writes relative paths).
inline RunResult run_tool(const std::string& args, const std::string& cwd = "") {
  const std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") +
                          std::string(UNETCU_TEST_BIN_DIR) + "/unetcu " + args + " 2>&1";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// How many times `what` occurs in `text` (overlaps counted).
inline int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("unetcu_cli_" + name + "_" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string str(const std::string& sub = "") const { return (sub.empty() ? path : path / sub).string(); }
};

}  // namespace unetcu::test
