// engine/fileio.h: whole-file reads and crash-safe whole-file writes.
// Checkpoints, configs and reports are written through write_file_atomic so that a crash or a
// full disk leaves either the old file or the new one, never a truncated mix.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace unetcu {

// Writes `path.tmp.<pid>` in the same folder, flushes it to disk (fsync), then renames it over
// `path`. On failure the temporary file is removed, an existing `path` is left untouched, and
// an Error names the path and the system's reason.
void write_file_atomic(const std::string& path, const void* data, size_t n);
void write_file_atomic(const std::string& path, const std::string& bytes);

// The same for a file made of pieces written one after another (a header, then blocks that
// already sit in memory, such as a decoded data set), without joining them in one buffer first.
struct ByteRange {
  const void* data;
  size_t n;
};
void write_file_atomic(const std::string& path, const std::vector<ByteRange>& pieces);

// The whole file as bytes. Errors say whether the file is missing, unreadable or a directory.
std::string read_file(const std::string& path);

}  // namespace unetcu
