// tests/emu/test_launch_rules.cpp: the rule that makes chained launches safe, checked in the
// sources of kernels/cuda. A chained kernel (UNETCU_LAUNCH_CHAINED, kernels/cuda/launch.h) may
// start while the previous kernel of its stream still runs, so nothing before its
// UNETCU_GRID_DEPENDENCY_SYNC() may touch memory. The emulator runs kernels one after another
// and only sees a thread that never reaches the sync; it cannot see a load placed before it.
// Hence: the sync is the first statement of every kernel, and every launch there is chained
// (or cooperative, which the sync also serves, or in clusters, which are chained too), or
// unchained by name (UNETCU_LAUNCH_UNCHAINED: where a chained launch's early blocks would hold
// SMs that are to drain), never a plain UNETCU_LAUNCH that may have been meant chained.
// A second rule keeps the emulator's checks of shared memory in force: static shared arrays are
// declared through UNETCU_STATIC_SHARED, whose emulated arrays start as poison in every block
// and have redzones; a plain `__shared__` array is a thread_local there, which keeps the
// previous block's values and which AddressSanitizer does not watch.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
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
  for (const auto& entry : std::filesystem::directory_iterator(
           std::filesystem::path(UNETCU_SOURCE_DIR) / "kernels" / "cuda")) {
    const std::string ext = entry.path().extension().string();
    if (entry.path().filename() == "launch.h") continue;  // defines the macros
    if (ext == ".cu" || ext == ".cuh" || ext == ".h") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

bool identifier_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Offsets in `code` where an identifier starting with `prefix` begins.
std::vector<size_t> occurrences(const std::string& code, const std::string& prefix) {
  std::vector<size_t> out;
  for (size_t at = code.find(prefix); at != std::string::npos; at = code.find(prefix, at + 1))
    if (at == 0 || !identifier_char(code[at - 1])) out.push_back(at);
  return out;
}

// The identifier starting at `at`.
std::string identifier_at(const std::string& code, size_t at) {
  size_t end = at;
  while (end < code.size() && identifier_char(code[end])) ++end;
  return code.substr(at, end - at);
}

// Calls check(code, at) for every offset find(code) gives in each kernel source, with the file
// and line captured for the report; returns how many there were.
template <class Find, class Check>
int for_each_site(const Find& find, const Check& check) {
  int sites = 0;
  for (const auto& file : kernel_sources()) {
    const std::string code = code_of(file);
    for (size_t at : find(code)) {
      ++sites;
      CAPTURE(file.filename().string());
      CAPTURE(line_of(code, at));
      check(code, at);
    }
  }
  return sites;
}

// Offsets just past the opening brace of every kernel definition: `__global__`, then a
// parameter list's `)` and `{` before any `;` (a declaration) or `}`.
std::vector<size_t> kernel_bodies(const std::string& code) {
  std::vector<size_t> out;
  for (size_t at : occurrences(code, "__global__")) {
    const size_t stop = code.find_first_of(";{}", at);
    if (stop == std::string::npos || code[stop] != '{') continue;
    const size_t before = code.find_last_not_of(" \t\r\n", stop - 1);
    if (before != std::string::npos && code[before] == ')') out.push_back(stop + 1);
  }
  return out;
}

TEST_CASE("every kernel in kernels/cuda waits for the previous kernel before anything else") {
  const std::string sync = "UNETCU_GRID_DEPENDENCY_SYNC();";
  const int kernels = for_each_site(kernel_bodies, [&](const std::string& code, size_t body) {
    const size_t first = code.find_first_not_of(" \t\r\n", body);
    CHECK_MESSAGE(code.compare(first, sync.size(), sync) == 0,
                  "the kernel's first statement must be " << sync);
  });
  CHECK(kernels >= 10);  // the scan found the kernels (10 when this test was written)
}

TEST_CASE("every launch in kernels/cuda is chained, cooperative, clustered or named unchained") {
  const auto launches_in = [](const std::string& code) {
    std::vector<size_t> out;  // UNETCU_LAUNCH... followed by '(': a call
    for (size_t at : occurrences(code, "UNETCU_LAUNCH")) {
      const size_t next = code.find_first_not_of(" \t\r\n", at + identifier_at(code, at).size());
      if (next != std::string::npos && code[next] == '(') out.push_back(at);
    }
    return out;
  };
  const int launches = for_each_site(launches_in, [](const std::string& code, size_t at) {
    const std::string macro = identifier_at(code, at);
    CHECK_MESSAGE((macro == "UNETCU_LAUNCH_CHAINED" || macro == "UNETCU_LAUNCH_COOPERATIVE" ||
                   macro == "UNETCU_LAUNCH_CLUSTER" || macro == "UNETCU_LAUNCH_UNCHAINED"),
                  macro << " launches a kernel unchained");
  });
  CHECK(launches >= 13);  // 13 when this test was written
}

TEST_CASE("kernels/cuda declares static shared memory only through UNETCU_STATIC_SHARED") {
  const auto plain = [](const std::string& code) { return occurrences(code, "__shared__"); };
  const int found = for_each_site(plain, [](const std::string&, size_t) {
    FAIL_CHECK("a plain __shared__ declaration: use UNETCU_STATIC_SHARED (kernels/cuda/launch.h)");
  });
  CHECK(found == 0);
  const auto declared = [](const std::string& code) {
    return occurrences(code, "UNETCU_STATIC_SHARED");
  };
  // 15 when written; 14 since the loss's sums in parts use reduce_block's (common.cuh).
  CHECK(for_each_site(declared, [](const std::string&, size_t) {}) >= 14);
}

}  // namespace
}  // namespace unetcu::test
