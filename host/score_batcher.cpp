#include "host/score_batcher.h"

#include <algorithm>
#include <thread>

#include "tastebud/error.h"

namespace tastebud::host {

ScoreBatcher::ScoreBatcher(const Scorer& scorer, size_t max_batch, unsigned passes)
    : scorer_(scorer), max_batch_(std::max<size_t>(1, max_batch)),
      passes_(passes > 0 ? passes : std::max(1u, std::thread::hardware_concurrency())) {}

void ScoreBatcher::score(uint32_t user, std::vector<float>& out) {
  // Checked here: a bad request must not fail the others of its pass.
  TB_CHECK(user < scorer_.params().config.num_users, "scorer: user index out of range");
  Request me;
  me.user = user;
  me.out = &out;
  std::unique_lock lock(mutex_);
  queue_.push_back(&me);
  while (!me.done) {
    // Queued and a pass free: lead one (it takes the queue's front, which may not hold this one).
    if (running_ < passes_ && !queue_.empty()) run_pass(lock);
    else finished_.wait(lock);
  }
  if (me.error) std::rethrow_exception(me.error);
}

// Takes the queue's first max_batch requests, scores them without the lock, hands the results out.
void ScoreBatcher::run_pass(std::unique_lock<std::mutex>& lock) {
  ++running_;
  const size_t taken = std::min(queue_.size(), max_batch_);
  const std::vector<Request*> batch(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(taken));
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(taken));
  largest_ = std::max(largest_, taken);
  lock.unlock();
  std::exception_ptr error;
  try {
    const size_t n = scorer_.num_items();
    if (batch.size() == 1) {  // alone (an idle server, one thread): straight into its output, no copy
      batch[0]->out->resize(n);
      scorer_.score_all(batch[0]->user, *batch[0]->out);
    } else {
      std::vector<uint32_t> users;
      for (const Request* r : batch) users.push_back(r->user);
      thread_local std::vector<float> all;
      all.resize(users.size() * n);
      scorer_.score_users(users, all);
      for (size_t k = 0; k < batch.size(); ++k)
        batch[k]->out->assign(all.begin() + static_cast<std::ptrdiff_t>(k * n), all.begin() + static_cast<std::ptrdiff_t>((k + 1) * n));
    }
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  for (Request* r : batch) {
    r->done = true;
    r->error = error;
  }
  --running_;
  finished_.notify_all();
}

size_t ScoreBatcher::largest_pass() const {
  std::lock_guard lock(mutex_);
  return largest_;
}

}  // namespace tastebud::host
