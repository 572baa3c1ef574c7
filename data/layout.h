// data/layout.h: where a dataset's images, masks and metadata are, recognised from the folder
// names of the published releases, and the metadata CSV files they ship.
//
// detect_source(DATA) tries these layouts in this order; the first that matches is used and any
// other that also matches is named in DataSource::notes (never silently mixed):
//   kaggle     DATA/images/, DATA/masks/ (+ GroundTruth.csv, one-hot MEL,NV,BCC,AKIEC,BKL,DF,VASC)
//              the Kaggle HAM10000 repackaging with masks; also any folder in that shape
//   ham10000   DATA/HAM10000_images_part_1/, DATA/HAM10000_images_part_2/,
//              DATA/HAM10000_segmentations_lesion_tschandl/ (+ HAM10000_metadata.csv:
//              lesion_id,image_id,dx,...), the official release
//   isic2018   ISIC2018_Task1-2_Training_Input/ + ISIC2018_Task1_Training_GroundTruth/
//   isic2017   ISIC-2017_Training_Data/ + ISIC-2017_Training_Part1_GroundTruth/
//   isic2016   ISBI2016_ISIC_Part1_Training_Data/ + ISBI2016_ISIC_Part1_Training_GroundTruth/
// When DATA itself matches none, its sub-folders are tried (so DATA may be the folder an archive
// was extracted into): exactly one matching sub-folder is used, several are an error naming them.
// SourceOptions::images/masks name the folders explicitly instead (layout "folders").
//
// Masks are <stem><mask_suffix>.<png|jpg|jpeg|bmp> with the suffix matched in any case
// (ISIC 2016 writes _Segmentation.png); images are .jpg/.jpeg/.png/.bmp in any case. Files with
// other extensions (LICENSE.txt, ATTRIBUTION.txt, metadata CSVs) and ISIC 2017's
// <stem>_superpixels.png are not images and are ignored. GroundTruth.csv and
// HAM10000_metadata.csv are read from the folder the layout was found in (for explicit folders:
// DATA), whichever layout matched, when they exist: the metadata gives lesion_id and dx,
// GroundTruth.csv gives dx.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace unetcu::data {

struct SourceOptions {
  std::string images;  // --images DIR ("" = detect); relative paths are relative to DATA
  std::string masks;   // --masks DIR
  std::optional<std::string> mask_suffix;  // --mask-suffix; unset = "_segmentation"
};

struct DataSource {
  std::string layout;       // kaggle, ham10000, isic2018, isic2017, isic2016 or folders
  std::string description;  // one line for the user, e.g. "HAM10000, official release"
  std::string root;         // the folder the layout was found in
  std::vector<std::string> image_dirs;  // one, or HAM10000's two parts
  std::string mask_dir;
  std::string mask_suffix = "_segmentation";
  std::string groundtruth_csv;  // path, "" when absent
  std::string metadata_csv;     // path, "" when absent
  std::vector<std::string> notes;  // other layouts also present, sub-folder used, ...
};

// Throws unetcu::Error when dir is not a folder, when nothing is recognised (the message lists
// what is looked for and suggests --images/--masks), when several sub-folders match, or when
// only one of images/masks is given.
DataSource detect_source(const std::string& dir, const SourceOptions& opt = {});

// Per-image metadata, keyed by image stem (ISIC_0024306).
struct ImageMeta {
  std::string lesion_id;  // HAM_0000118; "" when unknown
  std::string dx;         // mel, nv, bcc, akiec, bkl, df, vasc; "" when unknown
};
using Metadata = std::map<std::string, ImageMeta>;

// HAM10000_metadata.csv: columns lesion_id, image_id and dx (found by name, others ignored).
// GroundTruth.csv: image plus the one-hot columns MEL,NV,BCC,AKIEC,BKL,DF,VASC, exactly one of
// which is 1 per row; dx is that column's name in lower case. Throws naming file and line for a
// missing column, a short row, a row that is not one-hot, or an image listed twice.
Metadata read_ham_metadata(const std::string& path);
Metadata read_groundtruth(const std::string& path);
// The source's metadata merged: lesion ids from the metadata file, dx from it or else from
// GroundTruth.csv. Empty when the source has neither file.
Metadata read_source_metadata(const DataSource& src);

// RFC 4180 CSV: comma-separated, fields optionally in double quotes ("" inside quotes is a quote,
// quoted fields may hold commas and line breaks), LF or CRLF line ends, a UTF-8 byte-order mark
// ignored, empty lines skipped. Each row keeps the line number it started on, for errors.
struct CsvRow {
  int line = 0;
  std::vector<std::string> fields;
};
std::vector<CsvRow> parse_csv(const std::string& text, const std::string& name);

}  // namespace unetcu::data
