// tools/unetcu/progress.h: progress for long loops. On a terminal, one line redrawn in place
// (bar, loss, IoU, images/s, ETA); otherwise (logs, CI) plain lines at about every 10% so
// a log stays readable.
#pragma once

#include <chrono>
#include <string>

namespace unetcu::cli {

class Progress {
 public:
  Progress(std::string label, int total);
  // done: steps finished so far; images: images processed so far.
  void update(int done, long images, double loss, double iou);
  // The loop resumes with `done` steps and `images` images already behind it (a resumed
  // epoch): the rate and the ETA count only what this process does.
  void resume_from(int done, long images);
  void finish(const std::string& summary);

 private:
  std::string line(int done, long images, double loss, double iou) const;
  std::string label_;
  int total_;
  bool tty_;
  int last_plain_ = -1;
  int first_done_ = 0;
  long first_images_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Seconds as "1:05" or "1:02:03".
std::string format_duration(double seconds);

}  // namespace unetcu::cli
