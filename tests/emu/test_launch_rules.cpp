// tests/emu/test_launch_rules.cpp: the rule that makes chained launches safe, checked in the
// sources of kernels/cuda. A chained kernel (UNETCU_LAUNCH_CHAINED, kernels/cuda/launch.h) may
// start while the previous kernel of its stream still runs, so nothing before its
// UNETCU_GRID_DEPENDENCY_SYNC() may touch memory. The emulator runs kernels one after another
// and only sees a thread that never reaches the sync; it cannot see a load placed before it.
// Hence: the sync is the first statement of every kernel, and every launch there is chained
// (or cooperative, which the sync also serves).
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace unetcu::test {
namespace {

// The file's text with // comments blanked out (the rules are about code; comments may
// mention the macros).
std::string code_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), "cannot read " << file.string());
  std::ostringstream out;
  std::string line;
  while (std::getline(in, line)) {
    const size_t comment = line.find("//");
    out << (comment == std::string::npos ? line : line.substr(0, comment)) << "\n";
  }
  return out.str();
}

// Line number (1-based) of offset `at` in `text`.
int line_of(const std::string& text, size_t at) {
  return 1 + int(std::count(text.begin(), text.begin() + std::ptrdiff_t(at), '\n'));
}

std::vector<std::filesystem::path> kernel_sources() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(UNETCU_SOURCE_DIR) / "kernels" /
                                           "cuda")) {
    const std::string ext = entry.path().extension().string();
    if (entry.path().filename() == "launch.h") continue;  // defines the macros
    if (ext == ".cu" || ext == ".cuh" || ext == ".h") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST_CASE("every kernel in kernels/cuda waits for the previous kernel before anything else") {
  const std::regex kernel_head(R"(__global__[^;{}]*\)\s*\{)");
  const std::string sync = "UNETCU_GRID_DEPENDENCY_SYNC();";
  int kernels = 0;
  for (const auto& file : kernel_sources()) {
    const std::string code = code_of(file);
    for (auto it = std::sregex_iterator(code.begin(), code.end(), kernel_head);
         it != std::sregex_iterator(); ++it) {
      ++kernels;
      const size_t body = size_t(it->position() + it->length());
      const size_t first = code.find_first_not_of(" \t\r\n", body);
      CAPTURE(file.filename().string());
      CAPTURE(line_of(code, size_t(it->position())));
      CHECK_MESSAGE(code.compare(first, sync.size(), sync) == 0,
                    "the kernel's first statement must be " << sync);
    }
  }
  CHECK(kernels >= 10);  // the scan found the kernels (10 when this test was written)
}

TEST_CASE("every launch in kernels/cuda is chained or cooperative") {
  const std::regex launch(R"(UNETCU_LAUNCH\w*\s*\()");
  int launches = 0;
  for (const auto& file : kernel_sources()) {
    const std::string code = code_of(file);
    for (auto it = std::sregex_iterator(code.begin(), code.end(), launch);
         it != std::sregex_iterator(); ++it) {
      ++launches;
      const std::string macro = it->str().substr(0, it->str().find_first_of(" \t("));
      CAPTURE(file.filename().string());
      CAPTURE(line_of(code, size_t(it->position())));
      CHECK_MESSAGE((macro == "UNETCU_LAUNCH_CHAINED" || macro == "UNETCU_LAUNCH_COOPERATIVE"),
                    macro << " launches a kernel unchained");
    }
  }
  CHECK(launches >= 13);  // 13 when this test was written
}

}  // namespace
}  // namespace unetcu::test
