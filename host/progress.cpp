#include "host/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace tastebud::host {
namespace {

std::string format_rate(double per_second) {
  if (per_second >= 1e6) return fmt::format("{:.2f}M", per_second / 1e6);
  if (per_second >= 1e4) return fmt::format("{:.1f}k", per_second / 1e3);
  return fmt::format("{:.1f}", per_second);
}

}  // namespace

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  if (seconds < 60) return fmt::format("{:.0f}s", seconds);
  if (seconds < 3600) return fmt::format("{:.0f}m{:02.0f}s", std::floor(seconds / 60), std::fmod(std::floor(seconds), 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(seconds / 3600), std::fmod(std::floor(seconds / 60), 60));
}

ProgressLine::ProgressLine(std::string unit, bool enabled)
    : unit_(std::move(unit)), enabled_(enabled && ::isatty(2)) {}

void ProgressLine::update(std::string_view label, double fraction, double count, std::string_view note) {
  if (!enabled_) return;
  const Clock::time_point now = Clock::now();
  if (count < last_count_) start_ = now;
  last_count_ = count;
  const bool finished = fraction >= 1.0;
  if (!finished && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string line(label);
  if (fraction >= 0) line += fmt::format(" {:5.1f}%", 100.0 * std::min(fraction, 1.0));
  line += fmt::format("  {} {}/s", format_rate(elapsed > 0 ? count / elapsed : 0), unit_);
  if (!note.empty()) line += fmt::format("  {}", note);
  if (fraction > 0 && elapsed > 0) line += "  ETA " + format_duration(elapsed * (1 - std::min(fraction, 1.0)) / fraction);
  std::fprintf(stderr, "\r%s\033[K", line.c_str());  // \033[K: erase what a longer line left
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::clear() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace tastebud::host
