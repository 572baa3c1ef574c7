// tools/unetcu/progress.cpp: see progress.h.
#include "tools/unetcu/progress.h"

#include <unistd.h>

#include <cstdio>

namespace unetcu::cli {

std::string format_duration(double seconds) {
  long s = long(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

Progress::Progress(std::string label, int total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()) {}

std::string Progress::line(int done, long images, double loss, double iou) const {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int steps = done - first_done_;
  double rate = elapsed > 0 ? double(images - first_images_) / elapsed : 0;
  double eta = steps > 0 ? elapsed * (total_ - done) / steps : 0;
  const int width = 24;
  int filled = total_ > 0 ? done * width / total_ : width;
  std::string bar(size_t(filled), '#');
  bar.resize(size_t(width), '.');
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s [%s] %d/%d  loss %.4f  iou %.4f  %.1f img/s  ETA %s",
                label_.c_str(), bar.c_str(), done, total_, loss, iou, rate,
                format_duration(eta).c_str());
  return buf;
}

void Progress::resume_from(int done, long images) {
  first_done_ = done;
  first_images_ = images;
}

void Progress::update(int done, long images, double loss, double iou) {
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", line(done, images, loss, iou).c_str());
    std::fflush(stderr);
    return;
  }
  int decile = total_ > 0 ? done * 10 / total_ : 10;
  if (decile != last_plain_ && done < total_) {
    last_plain_ = decile;
    std::fprintf(stderr, "%s\n", line(done, images, loss, iou).c_str());
  }
}

void Progress::finish(const std::string& summary) {
  if (tty_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", summary.c_str());
}

}  // namespace unetcu::cli
