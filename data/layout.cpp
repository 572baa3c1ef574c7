// data/layout.cpp: layout detection (a fixed table of the published folder names, tried in
// order) and the CSV metadata readers.
#include "data/layout.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <cstdlib>
#include <sstream>

#include "engine/error.h"
#include "engine/fileio.h"

namespace unetcu::data {

namespace fs = std::filesystem;

namespace {

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// A release whose images and masks are one folder pair.
struct FolderPair {
  const char* layout;
  const char* description;
  const char* images;
  const char* masks;
  const char* mask_suffix;
};

constexpr FolderPair kIsicPairs[] = {
    {"isic2018", "ISIC 2018 Task 1 training set", "ISIC2018_Task1-2_Training_Input",
     "ISIC2018_Task1_Training_GroundTruth", "_segmentation"},
    {"isic2017", "ISIC 2017 Part 1 training set", "ISIC-2017_Training_Data",
     "ISIC-2017_Training_Part1_GroundTruth", "_segmentation"},
    {"isic2016", "ISBI 2016 ISIC Part 1 training set", "ISBI2016_ISIC_Part1_Training_Data",
     "ISBI2016_ISIC_Part1_Training_GroundTruth", "_Segmentation"},
};

constexpr const char* kHamParts[] = {"HAM10000_images_part_1", "HAM10000_images_part_2"};
constexpr const char* kHamMasks = "HAM10000_segmentations_lesion_tschandl";
constexpr const char* kHamMetadata = "HAM10000_metadata.csv";
constexpr const char* kGroundTruth = "GroundTruth.csv";

void attach_metadata(DataSource& src) {
  const fs::path root(src.root);
  if (is_file(root / kGroundTruth)) src.groundtruth_csv = (root / kGroundTruth).string();
  if (is_file(root / kHamMetadata)) src.metadata_csv = (root / kHamMetadata).string();
}

// Every layout that matches dir, in detection order.
std::vector<DataSource> matches_in(const fs::path& dir) {
  std::vector<DataSource> found;
  if (is_dir(dir / "images") || is_dir(dir / "masks")) {
    DataSource s;
    s.layout = "kaggle";
    s.description = "images/ + masks/ (Kaggle HAM10000 repackaging, ISIC style)";
    s.image_dirs = {(dir / "images").string()};
    s.mask_dir = (dir / "masks").string();
    found.push_back(s);
  }
  const bool ham_parts = is_dir(dir / kHamParts[0]) || is_dir(dir / kHamParts[1]);
  if (ham_parts || is_dir(dir / kHamMasks)) {
    DataSource s;
    s.layout = "ham10000";
    s.description = "HAM10000, official release (HAM10000_images_part_1/2 + " +
                    std::string(kHamMasks) + "/)";
    for (const char* part : kHamParts)
      if (is_dir(dir / part)) s.image_dirs.push_back((dir / part).string());
    if (s.image_dirs.empty()) s.image_dirs.push_back((dir / kHamParts[0]).string());
    s.mask_dir = (dir / kHamMasks).string();
    found.push_back(s);
  }
  for (const auto& pair : kIsicPairs) {
    if (!is_dir(dir / pair.images) && !is_dir(dir / pair.masks)) continue;
    DataSource s;
    s.layout = pair.layout;
    s.description = std::string(pair.description) + " (" + pair.images + "/ + " + pair.masks + "/)";
    s.image_dirs = {(dir / pair.images).string()};
    s.mask_dir = (dir / pair.masks).string();
    s.mask_suffix = pair.mask_suffix;
    found.push_back(s);
  }
  for (auto& s : found) {
    s.root = dir.string();
    attach_metadata(s);
  }
  return found;
}

fs::path under(const fs::path& root, const std::string& p) {
  const fs::path path(p);
  return path.is_absolute() ? path : root / path;
}

DataSource explicit_source(const fs::path& root, const SourceOptions& opt) {
  if (opt.images.empty() || opt.masks.empty())
    fail("--images and --masks go together: both folders are needed (got ",
         opt.images.empty() ? "--masks" : "--images", " only)");
  DataSource s;
  s.layout = "folders";
  s.root = root.string();
  s.image_dirs = {under(root, opt.images).string()};
  s.mask_dir = under(root, opt.masks).string();
  s.description = "--images " + s.image_dirs[0] + " --masks " + s.mask_dir;
  attach_metadata(s);
  return s;
}

std::string expected_layouts() {
  std::ostringstream os;
  os << "images/ + masks/; " << kHamParts[0] << "/ + " << kHamMasks << "/";
  for (const auto& pair : kIsicPairs) os << "; " << pair.images << "/ + " << pair.masks << "/";
  return os.str();
}

DataSource detect(const fs::path& root) {
  std::vector<DataSource> found = matches_in(root);
  if (found.empty()) {
    // The folder an archive was extracted into: look one level down.
    std::vector<fs::path> subdirs;
    std::error_code ec;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_directory(ec)) subdirs.push_back(it->path());
    if (ec) fail("cannot list ", root.string(), ": ", ec.message());
    std::sort(subdirs.begin(), subdirs.end());
    std::vector<std::string> matching;
    for (const auto& sub : subdirs) {
      std::vector<DataSource> inner = matches_in(sub);
      if (inner.empty()) continue;
      matching.push_back(sub.filename().string());
      if (matching.size() == 1) {
        found = std::move(inner);
        found[0].notes.insert(found[0].notes.begin(),
                              "using the dataset in the sub-folder " + sub.filename().string());
      }
    }
    if (matching.size() > 1) {
      std::ostringstream os;
      for (size_t i = 0; i < matching.size(); ++i) os << (i ? ", " : "") << matching[i];
      fail("several datasets in ", root.string(), ": ", os.str(),
           "; point DATA at one of them");
    }
  }
  if (found.empty())
    fail("no dataset layout recognised in ", root.string(), ": expected one of ",
         expected_layouts(), "; or name the folders with --images DIR --masks DIR");
  DataSource chosen = found[0];
  for (size_t i = 1; i < found.size(); ++i)
    chosen.notes.push_back("also present, not used: " + found[i].description +
                           " (choose it with --images/--masks)");
  return chosen;
}

// Column positions of the named columns in a header row, or fail naming the missing one.
std::vector<size_t> columns(const CsvRow& header, const std::vector<std::string>& names,
                            const std::string& path) {
  std::vector<size_t> index;
  for (const auto& name : names) {
    auto it = std::find(header.fields.begin(), header.fields.end(), name);
    if (it == header.fields.end()) {
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ",") + n;
      fail(path, ": no column '", name, "' in the header line (expected ", all, ")");
    }
    index.push_back(size_t(it - header.fields.begin()));
  }
  return index;
}

// Reads path and returns its rows after the header, checking each row's length.
std::vector<CsvRow> read_table(const std::string& path, const std::vector<std::string>& names,
                               std::vector<size_t>& index) {
  std::vector<CsvRow> rows = parse_csv(read_file(path), path);
  if (rows.empty()) fail(path, ": empty file (expected a header line)");
  index = columns(rows[0], names, path);
  const size_t needed = *std::max_element(index.begin(), index.end()) + 1;
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].fields.size() < needed)
      fail(path, ":", rows[r].line, ": ", rows[r].fields.size(), " fields, expected at least ",
           needed);
  rows.erase(rows.begin());
  return rows;
}

void insert_unique(Metadata& meta, const std::string& image, ImageMeta m, const std::string& path,
                   int line) {
  if (image.empty()) fail(path, ":", line, ": empty image name");
  if (!meta.emplace(image, std::move(m)).second)
    fail(path, ":", line, ": image ", image, " is listed twice");
}

}  // namespace

DataSource detect_source(const std::string& dir, const SourceOptions& opt) {
  const fs::path root(dir);
  if (!is_dir(root)) fail("data folder not found: ", dir);
  DataSource s = (!opt.images.empty() || !opt.masks.empty()) ? explicit_source(root, opt)
                                                             : detect(root);
  if (opt.mask_suffix) s.mask_suffix = *opt.mask_suffix;
  return s;
}

std::vector<CsvRow> parse_csv(const std::string& text, const std::string& name) {
  std::vector<CsvRow> rows;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int line = 1;
  while (i < text.size()) {
    CsvRow row;
    row.line = line;
    std::string field;
    bool row_done = false;
    while (!row_done) {
      if (i < text.size() && text[i] == '"') {
        const int quote_line = line;
        ++i;
        for (;;) {
          if (i >= text.size()) fail(name, ":", quote_line, ": quoted field is never closed");
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          field += text[i++];
        }
        if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          fail(name, ":", line, ": unexpected character after a closing quote");
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          field += text[i++];
      }
      row.fields.push_back(std::move(field));
      field.clear();
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '\r') ++i;
      if (i < text.size() && text[i] == '\n') ++i;
      ++line;
      row_done = true;
    }
    const bool blank = row.fields.size() == 1 && row.fields[0].empty();
    if (!blank) rows.push_back(std::move(row));
  }
  return rows;
}

Metadata read_ham_metadata(const std::string& path) {
  std::vector<size_t> col;
  const auto rows = read_table(path, {"lesion_id", "image_id", "dx"}, col);
  Metadata meta;
  for (const auto& r : rows)
    insert_unique(meta, r.fields[col[1]], {r.fields[col[0]], lower(r.fields[col[2]])}, path,
                  r.line);
  return meta;
}

Metadata read_groundtruth(const std::string& path) {
  const std::vector<std::string> classes = {"MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"};
  std::vector<std::string> names = {"image"};
  names.insert(names.end(), classes.begin(), classes.end());
  std::vector<size_t> col;
  const auto rows = read_table(path, names, col);
  Metadata meta;
  for (const auto& r : rows) {
    std::string dx;
    int ones = 0;
    for (size_t k = 0; k < classes.size(); ++k) {
      const std::string& v = r.fields[col[k + 1]];
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || (x != 0.0 && x != 1.0))
        fail(path, ":", r.line, ": column ", classes[k], " is '", v, "', expected 0 or 1");
      if (x == 1.0) {
        ++ones;
        dx = lower(classes[k]);
      }
    }
    if (ones != 1)
      fail(path, ":", r.line, ": ", ones, " of the diagnosis columns are 1, expected exactly one");
    insert_unique(meta, r.fields[col[0]], {"", dx}, path, r.line);
  }
  return meta;
}

Metadata read_source_metadata(const DataSource& src) {
  Metadata meta;
  if (!src.metadata_csv.empty()) meta = read_ham_metadata(src.metadata_csv);
  if (!src.groundtruth_csv.empty())
    for (auto& [image, m] : read_groundtruth(src.groundtruth_csv)) {
      ImageMeta& slot = meta[image];
      if (slot.dx.empty()) slot.dx = m.dx;
    }
  return meta;
}

}  // namespace unetcu::data
