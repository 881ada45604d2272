// A progress line on a terminal for the long commands (train, import, batch-infer): how far, the
// rate and the time left, redrawn in place on stderr a few times a second. Nothing is drawn when
// stderr is not a terminal: logs get each command's one-line summaries (one per epoch) instead.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace tastebud::host {

class ProgressLine {
 public:
  // unit: what count() counts ("samples", "MB", "lines"); enabled: the caller's wish (--no-progress).
  ProgressLine(std::string unit, bool enabled);
  ~ProgressLine() { clear(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // `fraction` of the work done (0 to 1; negative: unknown), `count` units so far, a note after
  // the rate (e.g. "loss 0.6931"). A count lower than the last one starts a new pass (an epoch):
  // the rate is measured from there.
  void update(std::string_view label, double fraction, double count, std::string_view note = "");
  // Removes the line, so that the next log line starts clean.
  void clear();

  bool enabled() const { return enabled_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::string unit_;
  bool enabled_;
  bool drawn_ = false;
  double last_count_ = 0;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_draw_{};
};

// 0.42 -> "0s", 75 -> "1m15s", 4000 -> "1h06m".
std::string format_duration(double seconds);

}  // namespace tastebud::host
