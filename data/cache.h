// data/cache.h: the decode-once cache. Decoding 10,015 HAM10000 JPEGs takes minutes; the cache
// keeps the decoded, resized uint8 pixels of a data set in one file that later runs map into
// memory in milliseconds.
//
// File layout (native byte order; the file is a cache, not an exchange format):
//   0   "UNETCUDS"   magic
//   8   uint32       format version (kCacheFormat)
//   12  uint32       0
//   16  uint64       L, length of the JSON header
//   24  L bytes      JSON header: key, decoder version, size, load options, block offsets,
//                    file length, the decoded set's record ("dataset": the stems kept, mask
//                    counts, skipped and inverted lists, warnings) and the full key ("files":
//                    per pair [stem, image path, bytes, mtime in ns, mask path, bytes, mtime])
//   A   images block n * size * size * 3   (A = 24 + L rounded up to 4096)
//   B   masks block  n * size * size        (B = A + images rounded up to 4096)
//
// The key is a hash of: every image and mask path (absolute), its length and modification time
// (ns), the training size, the load options that change the result (skip_bad, fix_inverted)
// and the decoder version. A cache whose key differs, or that is
// truncated or damaged, is rebuilt (and the reason reported); a cache is never trusted
// partially. The file is written to a temporary name and renamed, so a crash or a full disk
// never leaves a half-written cache under the real name.
//
// Lesion ids and diagnoses are not part of the cached pixels: they come from the samples on
// every load, so editing the metadata never forces a re-decode.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace unetcu::data {

// Bump when load_dataset's output for the same files changes (decoder, resize, mask threshold),
// so that caches written by older code are rebuilt.
constexpr int kDecoderVersion = 1;
constexpr uint32_t kCacheFormat = 1;

// $XDG_CACHE_HOME/unetcu, else $HOME/.cache/unetcu; "" when neither variable is set.
std::string default_cache_dir();

// The cache file for these samples at this size inside `dir`. The name depends on the folders
// the files sit in, the image count and the size (not on file times), so an edited data set
// replaces its old cache rather than leaving it behind:  <data folder>-<size>px-<n>-<hash>.cache
std::string cache_path(const std::vector<Sample>& samples, int size, const std::string& dir);

struct CacheReport {
  enum class Outcome { kHit, kBuilt, kNotWritten };
  Outcome outcome = Outcome::kBuilt;
  std::string path;    // the cache file
  std::string reason;  // why it was (re)built: "no cache yet", "2 files changed (...)",
                       // "truncated ..."; for kNotWritten, why the file could not be written
};

// The Dataset of load_dataset(samples, size, load), read from the cache in `dir` when its key
// matches (the pixels are then a read-only memory mapping of the file), else decoded and
// written there. The warnings of the decode (non-binary, skipped or inverted masks) are passed
// to load.warn again on a hit, and Dataset::report is restored. A cache that cannot be written
// (read-only or full disk) leaves the decoded data in memory and says why in the report;
// decoding errors are thrown as by load_dataset.
// on_miss, when given, is called with the path and the reason before decoding starts (which
// takes minutes for a full data set), so that the user learns why.
Dataset load_cached(const std::vector<Sample>& samples, int size, const std::string& dir,
                    const LoadOptions& load = {}, CacheReport* report = nullptr,
                    const std::function<void(const CacheReport&)>& on_miss = {});

}  // namespace unetcu::data
