// kernels/cudnn/library_error.h: the message of a failed cuDNN or cuBLAS call, in one form for
// both libraries (conv_cudnn.cpp, gemm_cublas.cpp; kernels/cuda/check.h has the runtime's).
#pragma once

#include <sstream>
#include <string>

namespace unetcu::cudnn {

// "<library> error <code> (<text>) in <call> at <file>:<line>[ for <context>][: <detail>]
// [. Hint: <hint>]", the optional parts left out when empty.
inline std::string library_error(const char* library, int code, const char* text,
                                 const char* call, const char* file, int line,
                                 const std::string& context, const std::string& detail,
                                 const std::string& hint) {
  std::ostringstream message;
  message << library << " error " << code << " (" << text << ") in " << call << " at " << file
          << ":" << line;
  if (!context.empty()) message << " for " << context;
  if (!detail.empty()) message << ": " << detail;
  if (!hint.empty()) message << ". Hint: " << hint;
  return message.str();
}

}  // namespace unetcu::cudnn
