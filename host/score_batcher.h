// Users who ask at the same moment scored in one pass over the catalog. Scorer::score_users reads
// each block of item rows once for all its users, so a group of users costs little more than one
// when the item table does not stay in cache (MF's 25K x 66 floats, 6.6 MB, are read from L3 at
// every user otherwise: the serve benchmark's bound). A thread that finds fewer passes running than
// the machine has cores takes the requests queued then (itself among them, up to max_batch) and
// scores them together; the others wait for a pass, as the event log's group commit does. No
// request waits for a timer: an idle server scores each one alone, at once. A user's scores do not
// depend on who shares the pass.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

#include "tastebud/engine/scorer.h"

namespace tastebud::host {

class ScoreBatcher {
 public:
  // passes: how many run at once (0: the machine's cores).
  explicit ScoreBatcher(const Scorer& scorer, size_t max_batch = 16, unsigned passes = 0);
  ScoreBatcher(const ScoreBatcher&) = delete;
  ScoreBatcher& operator=(const ScoreBatcher&) = delete;

  // The user's logits over the catalog (Scorer::score_all without a context) into `out`.
  void score(uint32_t user, std::vector<float>& out);
  // The most users one pass has scored so far.
  size_t largest_pass() const;

 private:
  struct Request {
    uint32_t user = 0;
    std::vector<float>* out = nullptr;
    bool done = false;
    std::exception_ptr error;
  };
  void run_pass(std::unique_lock<std::mutex>& lock);

  const Scorer& scorer_;
  const size_t max_batch_;
  const unsigned passes_;
  mutable std::mutex mutex_;
  std::condition_variable finished_;
  std::vector<Request*> queue_;
  unsigned running_ = 0;
  size_t largest_ = 0;
};

}  // namespace tastebud::host
