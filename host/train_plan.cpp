#include "host/train_plan.h"

#include <optional>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "tastebud/engine/train_options.h"
#include "tastebud/error.h"

namespace tastebud::host {

// The --event rules, then the job file's [[events]] tables, as TYPE[:THRESHOLD[:WEIGHT]].
std::vector<std::string> job_events(const TrainJob& job) {
  std::vector<std::string> rules = job.events;
  if (job.config_file.empty() || !rules.empty()) return rules;
  toml::table config;
  try {
    config = toml::parse_file(job.config_file.string());
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}: {}", job.config_file.string(), e.source().begin.line, e.description()));
  }
  const toml::array* events = config["events"].as_array();
  if (!events) return rules;
  for (size_t k = 0; k < events->size(); ++k) {
    const toml::table* t = events->get(k)->as_table();
    const auto type = t ? (*t)["event_type"].value<std::string>() : std::nullopt;
    if (!type) {
      throw Error(fmt::format("{}: [[events]] entry {} needs event_type = \"...\"", job.config_file.string(), k + 1));
    }
    const auto threshold = (*t)["value_threshold"].value<double>();
    const auto weight = (*t)["weight"].value<double>();
    rules.push_back(fmt::format("{}:{}:{}", *type, threshold ? fmt::format("{}", *threshold) : "",
                                weight ? *weight : 1.0));
  }
  return rules;
}

namespace {

SplitOptions split_options_of(const TrainJob& job, const std::vector<std::string>& event_rules) {
  SplitOptions o;
  for (const std::string& rule : event_rules) o.events.push_back(parse_event_rule(rule));
  o.protocol = parse_eval_protocol(job.eval);
  o.impressions = job.impression_negatives > 0.0f;
  o.positive_rows = !job.context.empty();
  o.max_eval_users = job.eval_users > 0 ? job.eval_users : o.protocol == EvalProtocol::kHoldout ? 10000 : 0;
  return o;
}

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adagrad") return OptimizerKind::kAdagrad;
  if (name == "sgd") return OptimizerKind::kSgd;
  throw Error(fmt::format("unknown --optimizer '{}': expected adam, adagrad or sgd", name));
}

// `auto` is the dataset's to resolve (run_training); until then it reads lazy.
// `precision` with the older `tf32` switch, which means precision tf32.
Precision parse_precision(const std::string& name, bool tf32) {
  const Precision p = name == "fp32" ? Precision::kFp32 : name == "tf32" ? Precision::kTf32
                      : name == "bf16" ? Precision::kBf16
                      : throw Error(fmt::format("unknown `precision` '{}': expected fp32, tf32 or bf16", name));
  TB_CHECK(!tf32 || p != Precision::kBf16, "`tf32` and `precision` bf16 disagree: give one of them");
  return tf32 ? Precision::kTf32 : p;
}

CudaKernels parse_cuda_kernels(const std::string& name) {
  if (name == "separate") return CudaKernels::kSeparate;
  if (name == "fused") return CudaKernels::kFused;
  throw Error(fmt::format("unknown `cuda_kernels` '{}': expected separate or fused", name));
}

RankExchange parse_rank_exchange(const std::string& name) {
  if (name == "host") return RankExchange::kHost;
  if (name == "device") return RankExchange::kDevice;
  throw Error(fmt::format("unknown `rank_exchange` '{}': expected host or device", name));
}

EmbeddingUpdates parse_embedding_updates(const std::string& name) {
  if (name == "lazy" || name == "auto") return EmbeddingUpdates::kLazy;
  if (name == "dense") return EmbeddingUpdates::kDense;
  throw Error(fmt::format("unknown --embedding-updates '{}': expected auto, lazy or dense", name));
}

LossKind parse_loss(const std::string& name) {
  if (name == "bce") return LossKind::kBce;
  if (name == "bpr") return LossKind::kBpr;
  throw Error(fmt::format("unknown --loss '{}': expected bce or bpr", name));
}

SamplerKind parse_sampler(const std::string& name) {
  if (name == "uniform") return SamplerKind::kUniform;
  if (name == "popularity") return SamplerKind::kPopularity;
  throw Error(fmt::format("unknown --sampler '{}': expected uniform or popularity", name));
}

// The backend's options, each setting checked.
TrainOptions train_options_of(const TrainJob& job) {
  TrainOptions options;
  options.batch_size = job.batch_size;
  options.negatives = job.negatives;
  options.loss = parse_loss(job.loss);
  options.sampler = parse_sampler(job.sampler);
  options.sampler_alpha = job.sampler_alpha;
  options.optimizer.kind = parse_optimizer(job.optimizer);
  options.optimizer.lr = job.lr;
  options.optimizer.l2 = job.l2;
  options.embedding_updates = parse_embedding_updates(job.embedding_updates);
  options.seed = job.seed;
  options.threads = job.threads;
  options.precision = parse_precision(job.precision, job.tf32);
  options.cuda_kernels = parse_cuda_kernels(job.cuda_kernels);
  options.rank_exchange = parse_rank_exchange(job.rank_exchange);
  options.cuda_graph = job.cuda_graph;
  TB_CHECK(job.impression_negatives >= 0.0f && job.impression_negatives <= 1.0f,
           "`impression_negatives` is a share of the negatives, from 0 to 1");
  options.impression_share = job.impression_negatives;
  TB_CHECK(job.epochs > 0, "`epochs` must be positive");
  TB_CHECK(job.text_buckets > 0, "`text_buckets` must be positive");
  validate_train_options(options);
  return options;
}

// The model's kind and shape; the dataset adds its sizes and metadata.
ModelConfig model_shape_of(const TrainJob& job, ModelKind kind) {
  ModelConfig config;
  config.kind = kind;
  // MF's rows carry its two bias columns beside the factors (model.h).
  config.factors = job.factors + (kind == ModelKind::kMF ? ModelConfig::kMfBiasColumns : 0);
  config.layers = job.layers;
  return config;
}

// sasrec: the model's shape and the trainer's options, each checked (num_items comes with the dataset).
void plan_sequence(TrainPlan& plan) {
  const TrainJob& job = plan.job;
  plan.sequence_config = SequenceConfig{1, job.hidden, job.blocks, job.heads, job.max_sequence, job.dropout};
  plan.sequence_config.check();
  SequenceTrainOptions& o = plan.sequence_options;
  o.batch_size = job.batch_size;
  o.negatives = job.negatives;
  o.gbce_t = job.gbce_t;
  o.sampler = parse_sampler(job.sampler);
  o.sampler_alpha = job.sampler_alpha;
  o.optimizer.lr = job.lr;
  o.optimizer.l2 = job.l2;
  o.embedding_updates = parse_embedding_updates(job.embedding_updates);  // auto: lazy
  o.seed = job.seed;
  o.threads = job.threads;
  TB_CHECK(job.epochs > 0, "`epochs` must be positive");
  TB_CHECK(job.optimizer == "adam", "`optimizer`: the sequence model trains with adam");
  // auto stays on the CPU: the CUDA trainer has its parity test but has not run on a device yet.
  o.cuda = job.device == "cuda";
  TB_CHECK(job.loss == "bce", "`loss`: the sequence model trains with its sampled gBCE loss (`gbce_t` 0: plain BCE)");
  o.check();
}

}  // namespace

SplitOptions split_options_of(const TrainJob& job) { return split_options_of(job, job_events(job)); }

TrainPlan make_plan(const TrainJob& job) {
  TrainPlan plan;
  plan.job = job;
  plan.model = parse_model_type(job.model);
  plan.event_rules = job_events(job);
  plan.split = split_options_of(job, plan.event_rules);
  plan.protocol = plan.split.protocol;
  plan.validate = plan.protocol != EvalProtocol::kNone && job.validation_users > 0;
  plan.split.record_held_out_rows = plan.validate;
  plan.metric = !job.early_stop_metric.empty() ? job.early_stop_metric
                : holds_out_newest(plan.protocol) ? "ndcg@10" : "hr@10";
  if (plan.model == ModelType::kSASRec) plan_sequence(plan);
  if (const std::optional<ModelKind> kind = neural_kind(plan.model)) {
    plan.options = train_options_of(job);
    plan.model_config = model_shape_of(job, *kind);
    if (job.metadata != "auto") plan.metadata = parse_metadata_sides(job.metadata);
    TB_CHECK(job.judge_on_test || plan.validate,
             "a job that is not judged on the test split needs a validation split");
  }
  return plan;
}

void apply_model_defaults(TrainJob& job, const std::function<bool(const std::string&)>& given) {
  const ModelType model = parse_model_type(job.model);
  // A long tail of following items: an item any of the user's latest items led to, however
  // rarely, ranks above one none led to (on online-retail, 100 kept 0.79 validation HR@10, 1000 0.85).
  if (model == ModelType::kTransitions && !given("neighbors")) job.neighbors = 1000;
  // 128 sequences a step as SASRec's authors train; one negative per position and lr 0.005, chosen
  // on the real exports: with 64 negatives (and gBCE) or lr 0.001 the model stays at the
  // popularity ranking for tens of epochs (bench/RESULTS.md, issue 21).
  if (model == ModelType::kSASRec) {
    if (!given("batch_size")) job.batch_size = 128;
    if (!given("negatives")) job.negatives = 1;
    if (!given("lr")) job.lr = 0.005f;
    if (!given("embedding_updates")) job.embedding_updates = "auto";  // dense for catalogs that fit (train_sequence)
    // It learns for longer than mf: 60-80 epochs on ml-latest-small, 20-25 on online-retail, where
    // patience stops it.
    if (!given("epochs")) job.epochs = 80;
    if (!given("patience")) job.patience = 15;
  }
  if (model != ModelType::kMF) return;
  if (!given("factors")) job.factors = 64;
  if (!given("negatives")) job.negatives = 8;
  if (!given("lr")) job.lr = 0.002f;
  if (!given("l2")) job.l2 = 0.005f;
}

nlohmann::json epoch_record_json(const EpochRecord& r) {
  return nlohmann::json{{"epoch", r.epoch},
                        {"loss", r.loss},
                        {"samples", r.samples},
                        {"seconds", r.seconds},
                        {"samples_per_second", r.seconds > 0 ? r.samples / r.seconds : 0.0},
                        {"metrics", nlohmann::json(r.metrics)},
                        {"impression_negatives", r.impression_negatives}};
}

}  // namespace tastebud::host
