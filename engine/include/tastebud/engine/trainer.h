// The backend interface: what the epoch loop asks of the CPU and the CUDA backend alike.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tastebud/engine/features.h"
#include "tastebud/engine/model.h"
#include "tastebud/batch_rows.h"
#include "tastebud/optim_math.h"

namespace tastebud {

class Communicator;  // tastebud/engine/comm.h

enum class LossKind : uint32_t { kBce = 0, kBpr = 1 };
enum class SamplerKind : uint32_t { kUniform = 0, kPopularity = 1 };
// The id-table rows a step did not use: kLazy leaves them and their optimizer state alone (a
// step costs the batch's rows); kDense gives each a zero-gradient step, as torch.optim.Adam does
// for a dense nn.Embedding (Adam's moments decay and the row moves on with them; a step costs
// every row of the four id tables). Metadata and context tables stay lazy.
enum class EmbeddingUpdates : uint32_t { kLazy = 0, kDense = 1 };

// The positives a model trains on: distinct (user, item) pairs sorted by user, then item, so that
// user u's positives are the sorted slice item[user_offsets[u] .. user_offsets[u + 1]) that the
// sampler searches to reject a user's own items.
struct TrainingSet {
  uint32_t num_users = 0;
  uint32_t num_items = 0;
  std::vector<uint32_t> user;
  std::vector<uint32_t> item;
  std::vector<float> weight;           // loss weight of each positive
  std::vector<uint64_t> user_offsets;  // num_users + 1
  std::vector<uint64_t> item_counts;   // positives per item, for the popularity sampler
  // Items each user was shown (IMPRESSION) and never acted on, sorted: user u's are
  // impression_items[impression_offsets[u] .. impression_offsets[u + 1]). Empty offsets: none.
  std::vector<uint64_t> impression_offsets;
  std::vector<uint32_t> impression_items;
  // Metadata inputs, used when the model's config enables that side (empty otherwise).
  FeatureInputs user_features, item_features;
  // Context: positive p's context-table rows (one per contextual field the interaction has, weight
  // 1), used by the positive and by every negative drawn for it (the same situation, another item).
  FeatureInputs context;

  size_t size() const { return user.size(); }
  // The positives over this host memory, as the row-fill rule (tastebud/batch_rows.h) reads them;
  // impressions only with a positive share. No alias table: the caller adds its own.
  PositivesView view(float impression_share) const;
  // Builds offsets and counts from sorted user/item/weight; throws when the pairs are not sorted
  // and distinct.
  void finalize();
};

// Metadata models: sets the id rows of users and items without positives to zero, so that their
// scores come from metadata alone (an untrained N(0, 0.01) row would add noise). The CPU backend
// also keeps the id rows of items without positives at zero while they are sampled as negatives.
void zero_untrained_rows(ModelParams& params, const TrainingSet& data);

enum class Precision { kFp32, kTf32, kBf16 };
enum class CudaKernels { kSeparate, kFused };
enum class RankExchange { kHost, kDevice };

struct TrainOptions {
  uint32_t batch_size = 256;   // samples per step: BCE rows (positives + negatives), or BPR pairs
  uint32_t negatives = 4;      // negatives per positive
  LossKind loss = LossKind::kBce;
  SamplerKind sampler = SamplerKind::kUniform;
  float sampler_alpha = 0.75f;  // popularity sampler: P(item) ~ count^alpha
  OptimizerParams optimizer;
  EmbeddingUpdates embedding_updates = EmbeddingUpdates::kLazy;  // one process only
  uint64_t seed = 1;
  uint32_t threads = 0;  // 0: all cores
  // CUDA: how the dense layers' products multiply: fp32, or operands rounded for the tensor cores
  // to TF32 (10-bit mantissa) or bfloat16 (7-bit), accumulating in fp32; parameters and optimizer
  // state stay fp32, and so do activations except bf16 with fused kernels, which stores the MLP's
  // activations and their gradients in bf16. The CPU backend multiplies in fp32 whatever this says.
  Precision precision = Precision::kFp32;
  // CUDA: one kernel per operation of the step, or fused kernels (cuda::StepKernels: the dense
  // layers' bias and ReLU as GEMM epilogues, the ReLU backward inside the bias gradient, the GMF
  // product inside the head, each touched row summed and stepped in one pass). Same formulas;
  // separate until a device has measured fused.
  CudaKernels cuda_kernels = CudaKernels::kSeparate;
  // CUDA on several ranks: where the id tables' shards live. host: in each rank's host memory,
  // the rows and their gradients staged through it every step (ShardedIdTables); device: on each
  // rank's GPU, rows and gradients moved GPU to GPU (DeviceIdShards: NCCL's send/recv with a GPU
  // per rank, host-staged where ranks share one). The same sums in the same order. The CPU
  // backend's shards are always in host memory. host until a device has measured device.
  RankExchange rank_exchange = RankExchange::kHost;
  // CUDA in one process: each full batch's step (rows, passes, updates) replayed from a CUDA graph
  // captured once (cuda::StepGraph), one launch a step instead of some fifty; the per-batch
  // scalars are read on the device. The same kernels with the same values: the same model.
  bool cuda_graph = false;
  float impression_share = 0.0f;  // share of negatives drawn from the user's ignored impressions
  // Several ranks (CPU backend): each computes a fixed slice of every batch; the dense layers are
  // replicated and their gradients summed over ranks; the id tables are sharded by row (row % N)
  // with their optimizer state, rows fetched from and gradients returned to their owners (see
  // engine/src/sharded_tables.h). state() is then collective and whole on rank 0 only. Null, or
  // one rank: this process trains alone. Not owned.
  Communicator* comm = nullptr;
  // Update mode (train --update): only the id-table rows flagged here train (one flag per user
  // and per item; an empty vector: every row), and with freeze_dense the dense layers, the head,
  // the numeric projections and the feature and context tables keep their values and optimizer
  // state. Frozen rows are left out of the lazy update, so they stay bit-identical. One process
  // (either backend).
  std::vector<uint8_t> trainable_users, trainable_items;
  bool freeze_dense = false;
  bool masked() const { return !trainable_users.empty() || !trainable_items.empty() || freeze_dense; }
};

// Everything a checkpoint holds: the parameters, the optimizer's two state tensors per parameter
// tensor (same shapes; empty where the optimizer keeps none) and the number of steps taken.
struct TrainState {
  ModelParams params;
  std::vector<Tensor> state0, state1;
  uint64_t step = 0;

  static TrainState fresh(const ModelParams& params, const OptimizerParams& optimizer);
  // Throws tastebud::Error, naming the tensor, unless every parameter and both optimizer states
  // have the shape ParamLayout(config) gives them: what a backend's load_state accepts.
  void check_fits(const ModelConfig& config) const;
};

struct EpochStats {
  double mean_loss = 0.0;
  uint64_t samples = 0;
  double seconds = 0.0;
  bool finite = true;  // false when a batch's loss was NaN or infinite; the epoch stopped there
  uint64_t impression_negatives = 0;  // negatives that came from impressions
  uint64_t exchanged_bytes = 0;       // several ranks: bytes of the buffers the collectives filled
  uint64_t graph_steps = 0;           // CUDA with cuda_graph: the steps replayed from the captured graph
};

// progress(samples done, samples in the epoch, mean loss so far)
using ProgressFn = std::function<void(uint64_t, uint64_t, double)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Samples (BCE rows or BPR pairs) in one epoch.
  virtual uint64_t samples_per_epoch() const = 0;
  virtual EpochStats train_epoch(uint32_t epoch, const ProgressFn& progress) = 0;
  // The current state (copied back from the device where there is one).
  virtual TrainState state() = 0;
  virtual void load_state(const TrainState& state) = 0;
  // The state as this process holds it: state() in one process; under several ranks, whose
  // state() gathers the whole id tables to rank 0, each rank's own rows of them
  // (ModelParams::sharded), which the collective model_io writers stream to rank 0 in blocks.
  virtual TrainState held_state() { return state(); }
  // Bytes of parameters and optimizer state this process holds (0: not reported).
  virtual uint64_t held_bytes() const { return 0; }
};

// The CPU backend: Eigen for the dense layers, OpenMP across fixed-size chunks of each batch so
// that the same seed gives a bit-identical model whatever the thread count.
std::unique_ptr<Backend> make_cpu_backend(const TrainingSet& data, const TrainOptions& options,
                                          TrainState state);

// What every backend checks before training: counts that match the model, a usable batch, and
// metadata, context and impression inputs that fit their specs. Throws tastebud::Error.
void check_training_inputs(const TrainingSet& data, const TrainOptions& options, const ModelConfig& config);

// Rows per chunk of a batch; a function of the batch size only, never of the thread count.
uint32_t chunk_rows(uint32_t batch_rows);

}  // namespace tastebud
