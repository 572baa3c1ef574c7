// tests/cpu/test_layouts.cpp: dataset layouts recognised from the published folder names
// (Kaggle HAM10000, official HAM10000, ISIC 2016-2018), explicit folders, sub-folders, the
// metadata CSVs (lesion_id and dx reaching the Dataset), extra files that must be ignored, and
// the errors for unpaired files and unreadable metadata. Each tree is a few tiny generated
// images in a fresh temp folder.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cpu/data_files.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/layout.h"
#include "data/synth.h"

namespace fs = std::filesystem;
using namespace unetcu;
using namespace unetcu::data;
using namespace unetcu::test;

namespace {

// Generated pictures (40x30) moved into the given folders; the stems are ISIC_0000000 ...
// mask_name(stem) gives the mask's file name.
template <typename MaskName>
void make_pairs(const fs::path& image_dir, const fs::path& mask_dir, int count,
                MaskName mask_name, const std::string& image_ext = ".jpg") {
  TempDir gen;
  synth_dataset(gen.str(), count, 3, 40, 30);
  fs::create_directories(image_dir);
  fs::create_directories(mask_dir);
  for (int k = 0; k < count; ++k) {
    char stem[32];
    std::snprintf(stem, sizeof stem, "ISIC_%07d", k);
    const fs::path image = gen.path / "images" / (std::string(stem) + ".jpg");
    if (image_ext == ".jpg") {
      fs::copy_file(image, image_dir / (std::string(stem) + image_ext));
    } else {  // re-encode as PNG so that the extension tells the truth
      const Image img = read_image(image.string(), 3);
      write_png(image_dir / (std::string(stem) + image_ext), img.width, img.height, 3, img.pixels);
    }
    fs::copy_file(gen.path / "masks" / (std::string(stem) + "_segmentation.png"),
                  mask_dir / mask_name(stem));
  }
}

std::string segmentation(const std::string& stem) { return stem + "_segmentation.png"; }

std::vector<std::string> stems_of(const std::vector<Sample>& samples) {
  std::vector<std::string> v;
  for (const auto& s : samples) v.push_back(s.stem);
  return v;
}

const std::vector<std::string> kThree = {"ISIC_0000000", "ISIC_0000001", "ISIC_0000002"};

}  // namespace

TEST_CASE("layout: Kaggle HAM10000 repackaging with GroundTruth.csv") {
  TempDir t;
  make_pairs(t.path / "images", t.path / "masks", 3, segmentation);
  touch(t.path / "GroundTruth.csv",
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0000002,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n"
        "ISIC_0009999,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n");  // a row without files is fine
  touch(t.path / "masks" / "LICENSE.txt", "cc-by-nc");

  const DataSource src = detect_source(t.str());
  CHECK(src.layout == "kaggle");
  CHECK(src.notes.empty());
  CHECK(fs::path(src.groundtruth_csv).filename() == "GroundTruth.csv");
  CHECK(src.metadata_csv.empty());
  const Pairing p = pair_files(src);
  CHECK(stems_of(p.samples) == kThree);
  CHECK(p.n_without_metadata == 0);
  const Dataset ds = load_dataset(p.samples, 32);
  CHECK(ds.dxs == std::vector<std::string>{"nv", "mel", "vasc"});
  CHECK(ds.lesion_ids == std::vector<std::string>{"", "", ""});
}

TEST_CASE("layout: official HAM10000 release with HAM10000_metadata.csv") {
  TempDir t;
  TempDir staging;
  make_pairs(staging.path / "imgs", t.path / "HAM10000_segmentations_lesion_tschandl", 3,
             segmentation);
  fs::create_directories(t.path / "HAM10000_images_part_1");
  fs::create_directories(t.path / "HAM10000_images_part_2");
  fs::copy_file(staging.path / "imgs" / "ISIC_0000000.jpg",
                t.path / "HAM10000_images_part_1" / "ISIC_0000000.jpg");
  fs::copy_file(staging.path / "imgs" / "ISIC_0000001.jpg",
                t.path / "HAM10000_images_part_1" / "ISIC_0000001.jpg");
  fs::copy_file(staging.path / "imgs" / "ISIC_0000002.jpg",
                t.path / "HAM10000_images_part_2" / "ISIC_0000002.jpg");
  // CRLF line ends, a quoted field and a byte-order mark, as spreadsheet exports write them.
  touch(t.path / "HAM10000_metadata.csv",
        "\xEF\xBB\xBFlesion_id,image_id,dx,dx_type,age,sex,localization\r\n"
        "HAM_0000118,ISIC_0000000,bkl,histo,80.0,male,scalp\r\n"
        "HAM_0000118,ISIC_0000001,bkl,histo,80.0,male,\"scalp, left\"\r\n"
        "HAM_0002730,ISIC_0000002,MEL,histo,80.0,male,scalp\r\n");

  const DataSource src = detect_source(t.str());
  CHECK(src.layout == "ham10000");
  CHECK(src.image_dirs.size() == 2);
  CHECK(src.notes.empty());
  const Dataset ds = load_dataset(find_pairs(t.str()), 32);
  CHECK(ds.stems == kThree);
  CHECK(ds.lesion_ids == std::vector<std::string>{"HAM_0000118", "HAM_0000118", "HAM_0002730"});
  CHECK(ds.dxs == std::vector<std::string>{"bkl", "bkl", "mel"});

  SUBCASE("images without a metadata row are counted") {
    touch(t.path / "HAM10000_metadata.csv",
          "lesion_id,image_id,dx\nHAM_0000118,ISIC_0000000,bkl\n");
    const Pairing p = pair_files(detect_source(t.str()));
    CHECK(p.n_without_metadata == 2);
    CHECK(p.samples[1].lesion_id.empty());
  }
  SUBCASE("missing segmentation folder is named") {
    fs::remove_all(t.path / "HAM10000_segmentations_lesion_tschandl");
    const std::string e = error_of([&] { find_pairs(t.str()); });
    CHECK(contains(e, "mask folder not found"));
    CHECK(contains(e, "HAM10000_segmentations_lesion_tschandl"));
  }
}

TEST_CASE("layout: ISIC 2018, 2017 and 2016 Task 1 folder pairs; extra files ignored") {
  struct Case {
    const char* layout;
    const char* images;
    const char* masks;
    const char* suffix;
  };
  for (const Case& c : {Case{"isic2018", "ISIC2018_Task1-2_Training_Input",
                             "ISIC2018_Task1_Training_GroundTruth", "_segmentation.png"},
                        Case{"isic2017", "ISIC-2017_Training_Data",
                             "ISIC-2017_Training_Part1_GroundTruth", "_segmentation.png"},
                        Case{"isic2016", "ISBI2016_ISIC_Part1_Training_Data",
                             "ISBI2016_ISIC_Part1_Training_GroundTruth", "_Segmentation.png"}}) {
    CAPTURE(c.layout);
    TempDir t;
    make_pairs(t.path / c.images, t.path / c.masks, 3,
               [&](const std::string& stem) { return stem + c.suffix; });
    // What the archives ship besides the pairs.
    write_png(t.path / c.images / "ISIC_0000000_superpixels.png", 2, 2, 3,
              std::vector<uint8_t>(12, 7));
    touch(t.path / c.images / "ISIC-2017_Training_Data_metadata.csv", "image_id,age\n");
    touch(t.path / c.images / "LICENSE.txt", "x");
    touch(t.path / c.masks / "ATTRIBUTION.txt", "x");
    touch(t.path / c.masks / "LICENSE.txt", "x");
    const DataSource src = detect_source(t.str());
    CHECK(src.layout == c.layout);
    const Pairing p = pair_files(src);
    CHECK(stems_of(p.samples) == kThree);
    CHECK(p.unpaired.empty());
    CHECK(load_dataset(p.samples, 32).n == 3);
  }
}

TEST_CASE("layout: sub-folders, several layouts, nothing recognised") {
  SUBCASE("the one dataset folder inside DATA is used") {
    TempDir t;
    make_pairs(t.path / "extracted" / "images", t.path / "extracted" / "masks", 2, segmentation);
    fs::create_directories(t.path / "other");
    const DataSource src = detect_source(t.str());
    CHECK(src.layout == "kaggle");
    CHECK(src.root == (t.path / "extracted").string());
    REQUIRE(!src.notes.empty());
    CHECK(contains(src.notes[0], "extracted"));
  }
  SUBCASE("two dataset folders inside DATA are an error naming both") {
    TempDir t;
    fs::create_directories(t.path / "a" / "images");
    fs::create_directories(t.path / "b" / "ISIC2018_Task1-2_Training_Input");
    const std::string e = error_of([&] { detect_source(t.str()); });
    CHECK(contains(e, "several datasets"));
    CHECK(contains(e, "a, b"));
  }
  SUBCASE("two layouts in one folder: the first in order wins, the other is noted") {
    TempDir t;
    make_pairs(t.path / "images", t.path / "masks", 2, segmentation);
    fs::create_directories(t.path / "ISIC-2017_Training_Data");
    const DataSource src = detect_source(t.str());
    CHECK(src.layout == "kaggle");
    REQUIRE(src.notes.size() == 1);
    CHECK(contains(src.notes[0], "ISIC-2017_Training_Data"));
  }
  SUBCASE("nothing recognised lists what is looked for") {
    TempDir t;
    touch(t.path / "readme.txt", "x");
    const std::string e = error_of([&] { detect_source(t.str()); });
    CHECK(contains(e, "no dataset layout recognised"));
    CHECK(contains(e, "HAM10000_images_part_1"));
    CHECK(contains(e, "--images"));
  }
}

TEST_CASE("layout: explicit --images/--masks/--mask-suffix") {
  TempDir t;
  SUBCASE("relative folders, masks named like their images") {
    make_pairs(t.path / "pics", t.path / "labels", 3,
               [](const std::string& stem) { return stem + ".png"; });
    SourceOptions opt;
    opt.images = "pics";
    opt.masks = "labels";
    opt.mask_suffix = "";
    const DataSource src = detect_source(t.str(), opt);
    CHECK(src.layout == "folders");
    CHECK(stems_of(pair_files(src).samples) == kThree);
    // Without the suffix option the default _segmentation finds no mask, and says what to do.
    opt.mask_suffix.reset();
    const std::string e = error_of([&] { pair_files(detect_source(t.str(), opt)); });
    CHECK(contains(e, "no masks"));
    CHECK(contains(e, "--mask-suffix"));
  }
  SUBCASE("masks beside their images, another suffix, PNG images") {
    make_pairs(t.path / "all", t.path / "all", 3,
               [](const std::string& stem) { return stem + "_Mask.png"; }, ".png");
    SourceOptions opt;
    opt.images = (t.path / "all").string();  // absolute
    opt.masks = "all";
    opt.mask_suffix = "_mask";
    const Pairing p = pair_files(detect_source(t.str(), opt));
    CHECK(stems_of(p.samples) == kThree);
    CHECK(fs::path(p.samples[0].mask_path).filename() == "ISIC_0000000_Mask.png");
  }
  SUBCASE("one of the two is an error") {
    SourceOptions opt;
    opt.images = "pics";
    CHECK(contains(error_of([&] { detect_source(t.str(), opt); }), "--images and --masks go together"));
  }
}

TEST_CASE("layout: unpaired files are an error, or listed with skip_unpaired") {
  TempDir t;
  make_pairs(t.path / "images", t.path / "masks", 3, segmentation);
  fs::remove(t.path / "masks" / "ISIC_0000001_segmentation.png");
  write_png(t.path / "masks" / "ISIC_0000007_segmentation.png", 2, 2, 1, {0, 0, 0, 0});
  const DataSource src = detect_source(t.str());
  const std::string e = error_of([&] { pair_files(src); });
  CHECK(contains(e, "have no mask"));
  CHECK(contains(e, "ISIC_0000001.jpg"));
  const Pairing p = pair_files(src, true);
  CHECK(stems_of(p.samples) == std::vector<std::string>{"ISIC_0000000", "ISIC_0000002"});
  CHECK(p.unpaired ==
        std::vector<std::string>{"ISIC_0000001.jpg", "ISIC_0000007_segmentation.png"});
  // Two masks for one image is an error whatever the option.
  write_png(t.path / "masks" / "ISIC_0000000_segmentation.bmp", 2, 2, 1, {0, 0, 0, 0});
  CHECK(contains(error_of([&] { pair_files(src, true); }), "two masks for ISIC_0000000"));
}

TEST_CASE("layout: metadata CSV errors name the file and line") {
  TempDir t;
  const fs::path gt = t.path / "GroundTruth.csv", meta = t.path / "HAM10000_metadata.csv";
  touch(gt, "image,MEL,NV,BCC,AKIEC,BKL,DF\nISIC_1,1,0,0,0,0,0\n");
  CHECK(contains(error_of([&] { read_groundtruth(gt.string()); }), "no column 'VASC'"));
  touch(gt, "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1,0,0,0,0,0,0\nISIC_2,1,1,0,0,0,0,0\n");
  const std::string two = error_of([&] { read_groundtruth(gt.string()); });
  CHECK(contains(two, "GroundTruth.csv:3"));
  CHECK(contains(two, "2 of the diagnosis columns are 1"));
  touch(gt, "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1,0,0,0,0,0,yes\n");
  CHECK(contains(error_of([&] { read_groundtruth(gt.string()); }), "column VASC is 'yes'"));
  touch(meta, "lesion_id,image_id,dx\nHAM_1,ISIC_1,nv\nHAM_2,ISIC_1,mel\n");
  CHECK(contains(error_of([&] { read_ham_metadata(meta.string()); }),
                 "HAM10000_metadata.csv:3: image ISIC_1 is listed twice"));
  touch(meta, "lesion_id,image_id,dx\nHAM_1,ISIC_1\n");
  CHECK(contains(error_of([&] { read_ham_metadata(meta.string()); }), "HAM10000_metadata.csv:2"));
  touch(meta, "lesion_id,image_id,dx\nHAM_1,\"ISIC_1,nv\n");
  CHECK(contains(error_of([&] { read_ham_metadata(meta.string()); }), "never closed"));

  // The parser itself: quotes, doubled quotes, line breaks inside quotes, blank lines.
  const auto rows = parse_csv("a,\"b,\"\"c\"\"\",d\n\n\"x\ny\",,z\r\n", "t.csv");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].fields == std::vector<std::string>{"a", "b,\"c\"", "d"});
  CHECK(rows[1].line == 3);
  CHECK(rows[1].fields == std::vector<std::string>{"x\ny", "", "z"});
}
