// data/cache.cpp: load_cached: key from file metadata, open + validate + mmap, or decode and
// write (header, then the pixel blocks straight from the decoded Dataset).
#include "data/cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/json.h"

namespace unetcu::data {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'U', 'N', 'E', 'T', 'C', 'U', 'D', 'S'};
constexpr size_t kPrefixBytes = 24;  // magic, format, reserved, header length
constexpr size_t kAlign = 4096;      // pixel blocks start on page boundaries
constexpr size_t kMaxHeaderBytes = size_t(1) << 30;

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// FNV-1a, 64-bit: a stable hash of the key text, identical on every platform.
uint64_t fnv1a(const std::string& s, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string absolute(const std::string& path) {
  return fs::absolute(fs::path(path)).lexically_normal().string();
}

struct FileStamp {
  int64_t bytes = 0, mtime_ns = 0;
};

FileStamp stamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail("cannot read ", path, ": ", std::strerror(errno));
  return {int64_t(st.st_size), int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// What the cache must match, per image: [stem, image path, bytes, mtime, mask path, bytes, mtime].
json::Array key_files(const std::vector<Sample>& samples) {
  json::Array files;
  files.reserve(samples.size());
  for (const Sample& s : samples) {
    const std::string image = absolute(s.image_path), mask = absolute(s.mask_path);
    const FileStamp si = stamp(image), sm = stamp(mask);
    files.emplace_back(
        json::Array{s.stem, image, si.bytes, si.mtime_ns, mask, sm.bytes, sm.mtime_ns});
  }
  return files;
}

// The load options that change which pairs are kept or what their pixels are.
std::string options_of(const LoadOptions& load) {
  return std::string("skip_bad=") + (load.skip_bad ? "1" : "0") +
         " fix_inverted=" + (load.fix_inverted ? "1" : "0");
}

std::string key_of(const json::Array& files, int size, const std::string& options) {
  const std::string text = "decoder " + std::to_string(kDecoderVersion) + " size " +
                           std::to_string(size) + " " + options + " " +
                           json::dump(json::Value(files));
  return hex(fnv1a(text));
}

// Why a cache with header `h` does not serve (files, size); "" when it does.
std::string mismatch(const json::Value& h, const json::Array& files, int size,
                     const std::string& options, const std::string& key) {
  if (h.at("decoder").as_int64() != kDecoderVersion)
    return "written by decoder version " + std::to_string(h.at("decoder").as_int64()) +
           ", this is version " + std::to_string(kDecoderVersion);
  if (h.at("size").as_int64() != size)
    return "size " + std::to_string(h.at("size").as_int64()) + ", wanted " + std::to_string(size);
  if (h.at("options").as_string() != options)
    return "other load options (" + h.at("options").as_string() + ", now " + options + ")";
  const json::Array& cached = h.at("files").as_array();
  if (cached.size() != files.size())
    return "the file list changed (" + std::to_string(cached.size()) + " images, now " +
           std::to_string(files.size()) + ")";
  size_t changed = 0, renamed = 0, first = files.size();
  for (size_t i = 0; i < files.size(); ++i) {
    if (cached[i] == files[i]) continue;
    const json::Array& c = cached[i].as_array();
    const json::Array& f = files[i].as_array();
    if (c.size() != f.size() || c[0] != f[0] || c[1] != f[1] || c[4] != f[4])
      ++renamed;
    else
      ++changed;
    first = std::min(first, i);
  }
  if (renamed) return "the file list changed (" + std::to_string(renamed) + " names differ)";
  if (changed)
    return std::to_string(changed) + (changed == 1 ? " file" : " files") +
           " changed (first: " + files[first].as_array()[0].as_string() + ")";
  if (h.at("key").as_string() != key) return "the key changed";
  return "";
}

// Reads exactly n bytes at offset; false on a short file.
bool read_at(int fd, void* out, size_t n, size_t offset) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
    offset += size_t(r);
  }
  return true;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

json::Array strings(const std::vector<std::string>& v) { return json::Array(v.begin(), v.end()); }

std::vector<std::string> strings(const json::Value& a) {
  std::vector<std::string> v;
  for (const json::Value& s : a.as_array()) v.push_back(s.as_string());
  return v;
}

// What a cache needs to reproduce the Dataset and the warnings of the decode it replaces.
json::Object record_of(const Dataset& ds, const std::vector<std::string>& warnings) {
  json::Object r;
  r.emplace_back("n", ds.n);
  r.emplace_back("stems", strings(ds.stems));  // the pairs kept (all, unless skip_bad dropped some)
  r.emplace_back("n_nonbinary_masks", ds.n_nonbinary_masks);
  r.emplace_back("skipped", strings(ds.report.skipped));
  r.emplace_back("inverted", strings(ds.report.inverted));
  r.emplace_back("inverted_fixed", ds.report.inverted_fixed);
  r.emplace_back("warnings", strings(warnings));
  return r;
}

// The Dataset fields of a record; lesion ids and diagnoses come from the current samples.
void restore(const json::Value& r, const std::vector<Sample>& samples, int size, Dataset& ds,
             std::vector<std::string>& warnings) {
  ds.n = int(r.at("n").as_int64());
  ds.size = size;
  ds.stems = strings(r.at("stems"));
  if (int(ds.stems.size()) != ds.n) fail("the record lists ", ds.stems.size(), " stems for ", ds.n);
  size_t j = 0;  // kept stems are a subsequence of the samples
  for (const std::string& stem : ds.stems) {
    while (j < samples.size() && samples[j].stem != stem) ++j;
    if (j == samples.size()) fail("the record names ", stem, ", which is not among the files");
    ds.lesion_ids.push_back(samples[j].lesion_id);
    ds.dxs.push_back(samples[j].dx);
    ++j;
  }
  ds.n_nonbinary_masks = int(r.at("n_nonbinary_masks").as_int64());
  ds.report.skipped = strings(r.at("skipped"));
  ds.report.inverted = strings(r.at("inverted"));
  ds.report.inverted_fixed = r.at("inverted_fixed").as_bool();
  warnings = strings(r.at("warnings"));
}

// Opens and checks the cache; on success fills `ds` (pixels viewing the mapping) and
// `warnings`. Returns why the cache cannot be used otherwise.
std::string try_open(const std::string& path, const std::vector<Sample>& samples,
                     const json::Array& files, int size, const std::string& options,
                     const std::string& key, Dataset& ds, std::vector<std::string>& warnings) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0)
    return errno == ENOENT ? "no cache yet" : std::string("cannot open: ") + std::strerror(errno);
  struct stat st;
  if (::fstat(f.fd, &st) != 0) return std::string("cannot stat: ") + std::strerror(errno);
  const size_t file_bytes = size_t(st.st_size);

  char prefix[kPrefixBytes];
  if (!read_at(f.fd, prefix, kPrefixBytes, 0))
    return "truncated (" + std::to_string(file_bytes) + " bytes)";
  uint32_t format;
  uint64_t header_bytes;
  std::memcpy(&format, prefix + 8, 4);
  std::memcpy(&header_bytes, prefix + 16, 8);
  if (std::memcmp(prefix, kMagic, sizeof kMagic) != 0) return "not a unetcu cache file";
  if (format != kCacheFormat) return "cache format " + std::to_string(format);
  if (header_bytes > kMaxHeaderBytes || kPrefixBytes + header_bytes > file_bytes)
    return "damaged header (length " + std::to_string(header_bytes) + ")";
  std::string text(header_bytes, '\0');
  if (!read_at(f.fd, text.data(), header_bytes, kPrefixBytes)) return "truncated header";

  size_t images_at = 0, masks_at = 0;
  Dataset found;
  try {
    const json::Value h = json::parse(text, path);
    const std::string why = mismatch(h, files, size, options, key);
    if (!why.empty()) return why;
    restore(h.at("dataset"), samples, size, found, warnings);
    images_at = size_t(h.at("images_offset").as_int64());
    masks_at = size_t(h.at("masks_offset").as_int64());
    const size_t expected = size_t(h.at("file_bytes").as_int64());
    const size_t n = size_t(found.n);
    if (images_at < kPrefixBytes + header_bytes || masks_at < images_at + n * found.image_bytes() ||
        expected != masks_at + n * found.mask_bytes())
      return "damaged header (inconsistent offsets)";
    if (file_bytes != expected)
      return "truncated (" + std::to_string(file_bytes) + " bytes, expected " +
             std::to_string(expected) + ")";
  } catch (const Error& e) {
    return std::string("damaged header (") + e.what() + ")";
  }

  void* base = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, f.fd, 0);
  if (base == MAP_FAILED) return std::string("cannot map: ") + std::strerror(errno);
  std::shared_ptr<const void> mapping(
      base, [file_bytes](const void* p) { ::munmap(const_cast<void*>(p), file_bytes); });
  const auto* bytes = static_cast<const uint8_t*>(base);
  found.view(std::move(mapping), bytes + images_at, bytes + masks_at);
  ds = std::move(found);
  return "";
}

void write_cache(const std::string& path, const Dataset& ds, const json::Array& files,
                 const std::string& options, const std::string& key,
                 const std::vector<std::string>& warnings) {
  const size_t images = size_t(ds.n) * ds.image_bytes(), masks = size_t(ds.n) * ds.mask_bytes();
  json::Object h;
  h.emplace_back("key", key);
  h.emplace_back("decoder", kDecoderVersion);
  h.emplace_back("size", ds.size);
  h.emplace_back("options", options);
  // Offsets depend on the header length, which depends on the offsets' digits: reserve the
  // fields first, then fix them at a length that no longer changes.
  h.emplace_back("images_offset", int64_t(0));
  h.emplace_back("masks_offset", int64_t(0));
  h.emplace_back("file_bytes", int64_t(0));
  h.emplace_back("dataset", record_of(ds, warnings));
  h.emplace_back("files", files);
  json::Value header(h);
  std::string text;
  for (size_t images_at = 0;;) {
    text = json::dump(header);
    const size_t at = align_up(kPrefixBytes + text.size());
    if (at == images_at) break;
    images_at = at;
    header["images_offset"] = int64_t(images_at);
    header["masks_offset"] = int64_t(align_up(images_at + images));
    header["file_bytes"] = int64_t(align_up(images_at + images) + masks);
  }
  const size_t images_at = size_t(header.at("images_offset").as_int64());
  const size_t masks_at = size_t(header.at("masks_offset").as_int64());

  char prefix[kPrefixBytes] = {};
  std::memcpy(prefix, kMagic, sizeof kMagic);
  std::memcpy(prefix + 8, &kCacheFormat, 4);
  const uint64_t header_bytes = text.size();
  std::memcpy(prefix + 16, &header_bytes, 8);
  const std::vector<char> zeros(kAlign, 0);
  write_file_atomic(path, {{prefix, kPrefixBytes},
                           {text.data(), text.size()},
                           {zeros.data(), images_at - kPrefixBytes - text.size()},
                           {ds.image(0), images},
                           {zeros.data(), masks_at - images_at - images},
                           {ds.mask(0), masks}});
}

}  // namespace

std::string default_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return (fs::path(xdg) / "unetcu").string();
  const char* home = std::getenv("HOME");
  if (home && *home) return (fs::path(home) / ".cache" / "unetcu").string();
  return "";
}

std::string cache_path(const std::vector<Sample>& samples, int size, const std::string& dir) {
  // The folders holding the files (usually DIR/images and DIR/masks), in first-seen order.
  std::vector<std::string> folders;
  for (const Sample& s : samples)
    for (const std::string* p : {&s.image_path, &s.mask_path}) {
      const std::string folder = fs::path(absolute(*p)).parent_path().string();
      if (std::find(folders.begin(), folders.end(), folder) == folders.end())
        folders.push_back(folder);
    }
  std::string id = std::to_string(size) + " " + std::to_string(samples.size());
  for (const auto& folder : folders) id += "\n" + folder;
  std::string name = "data";
  if (!samples.empty()) {
    const std::string parent =
        fs::path(absolute(samples[0].image_path)).parent_path().parent_path().filename().string();
    if (!parent.empty()) name = parent;
  }
  return (fs::path(dir) /
          (name + "-" + std::to_string(size) + "px-" + std::to_string(samples.size()) + "-" +
           hex(fnv1a(id)).substr(0, 8) + ".cache"))
      .string();
}

Dataset load_cached(const std::vector<Sample>& samples, int size, const std::string& dir,
                    const LoadOptions& load, CacheReport* report,
                    const std::function<void(const CacheReport&)>& on_miss) {
  CacheReport local;
  CacheReport& r = report ? *report : local;
  r.path = cache_path(samples, size, dir);
  const json::Array files = key_files(samples);
  const std::string options = options_of(load);
  const std::string key = key_of(files, size, options);

  Dataset ds;
  std::vector<std::string> warnings;
  r.reason = try_open(r.path, samples, files, size, options, key, ds, warnings);
  if (r.reason.empty()) {
    r.outcome = CacheReport::Outcome::kHit;
    if (load.warn)
      for (const auto& w : warnings) load.warn(w);
    return ds;
  }

  r.outcome = CacheReport::Outcome::kBuilt;
  if (on_miss) on_miss(r);
  LoadOptions decode = load;
  warnings.clear();
  decode.warn = [&](const std::string& w) {
    warnings.push_back(w);
    if (load.warn) load.warn(w);
  };
  ds = load_dataset(samples, size, decode);
  r.outcome = CacheReport::Outcome::kBuilt;
  try {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("cannot create ", dir, ": ", ec.message());
    write_cache(r.path, ds, files, options, key, warnings);
  } catch (const Error& e) {
    r.outcome = CacheReport::Outcome::kNotWritten;
    r.reason = e.what();
  }
  return ds;
}

}  // namespace unetcu::data
