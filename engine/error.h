// engine/error.h: the one exception type the engine throws for user-facing problems
// (bad input files, bad options, checkpoint mismatches). The CLI prints what() and exits 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace unetcu {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Builds the message from any streamable pieces: fail("cannot read ", path, ": ", why).
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

}  // namespace unetcu
