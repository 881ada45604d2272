#include "rank_step.h"

#include <vector>

namespace tastebud {

std::unique_ptr<ShardedIdTables> make_id_shards(Communicator& comm, TrainState& state) {
  return std::make_unique<ShardedIdTables>(comm, state);
}

RankStep::RankStep(Communicator& comm, TrainState& state) : comm_(comm), shards_(make_id_shards(comm, state)) {}

void RankStep::fetch(std::span<const uint32_t> users, std::span<const uint32_t> items) {
  shards_->fetch(0, users, fetched_[0]);
  shards_->fetch(1, items, fetched_[1]);
}

double RankStep::sum_loss(double loss, uint64_t* impressions) {
  double sums[2] = {loss, impressions ? static_cast<double>(*impressions) : 0.0};
  comm_.allreduce_sum(sums);
  if (impressions) *impressions = static_cast<uint64_t>(sums[1]);
  return sums[0];
}

void RankStep::update(const float* user_gmf_grad, const float* item_gmf_grad, const float* mlp_input_grad,
                      int64_t e, const OptimizerParams& optimizer, float step_size, float loss_scale,
                      const std::vector<uint64_t>* item_counts) {
  shards_->update(0, fetched_[0], user_gmf_grad, mlp_input_grad, 2 * e, 0, optimizer, step_size, loss_scale, nullptr);
  shards_->update(1, fetched_[1], item_gmf_grad, mlp_input_grad, 2 * e, e, optimizer, step_size, loss_scale,
                  item_counts);
}

uint64_t RankStep::share_rows(void* data, int64_t rows, int64_t width, size_t element, uint32_t chunk) {
  if (width == 0) return 0;
  const int n = comm_.size();
  std::vector<size_t> counts(n);
  for (int r = 0; r < n; ++r) {
    const auto [begin, end] = rank_rows(rows, chunk, r, n);
    counts[r] = static_cast<size_t>((end - begin) * width) * element;
  }
  const size_t bytes = static_cast<size_t>(rows * width) * element;
  comm_.allgather_in_place({static_cast<std::byte*>(data), bytes}, counts);
  return bytes;
}

}  // namespace tastebud
