// Micro-benchmarks of the CUDA kernels at the shapes of a MovieLens-20M NeuMF job (64 factors,
// layers 256,256,128,64, batch 65536 and 1048576 rows), and batch inference's top-K at the paper's
// model (8 factors, layers 64,32,16,8). Each op is timed with CUDA events around the launch
// (manual time), and reports bytes and FLOPs as rate counters, so the output reads as GB/s and
// FLOP/s. Without a GPU the program says why and exits 0.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/common.h"
#include "cuda/dense.h"
#include "cuda/embedding.h"
#include "cuda/features.h"
#include "cuda/loss.h"
#include "cuda/neumf.h"
#include "cuda/optimizer.h"
#include "cuda/sampler.h"
#include "cuda/scoring.h"
#include "cuda/topk.h"

namespace tb = tastebud;
namespace cu = tastebud::cuda;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<uint32_t> random_ids(size_t n, uint32_t below, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> pick(0, below - 1);
  std::vector<uint32_t> v(n);
  for (uint32_t& x : v) x = pick(rng);
  return v;
}

// Runs `body` once to warm up, then times each iteration with CUDA events on one stream.
void timed(benchmark::State& state, cu::StreamHandle stream, const std::function<void()>& body,
           double bytes, double flops) {
  body();
  cu::synchronize(stream);
  cu::EventTimer timer;
  for (auto _ : state) {
    timer.start(stream);
    body();
    state.SetIterationTime(timer.stop_ms(stream) / 1e3);
  }
  if (bytes > 0) state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  if (flops > 0) state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

constexpr uint32_t kUsers = 138000, kItems = 27000;

void register_all() {
  for (int64_t rows : {int64_t{65536}, int64_t{1048576}}) {
    const std::string tag = "/rows:" + std::to_string(rows);

    for (int64_t width : {int64_t{64}, int64_t{128}}) {
      benchmark::RegisterBenchmark(("gather_rows/width:" + std::to_string(width) + tag).c_str(),
                                   [rows, width](benchmark::State& state) {
        cu::Stream stream;
        auto table = cu::to_device(random_floats(static_cast<size_t>(kItems) * width, 1, 0.01f));
        auto ids = cu::to_device(random_ids(rows, kItems, 2));
        cu::DeviceBuffer<float> out(rows * 2 * width);
        timed(state, stream.get(), [&] {
          cu::gather_rows(table.data(), width, ids.data(), rows, out.data(), 2 * width, width, stream.get());
        }, rows * (4.0 * width * 2 + 4), 0);
      })->UseManualTime()->Unit(benchmark::kMicrosecond);
    }

    // Each shape at each precision with the separate kernels, and at tf32 and bf16 with the fused
    // ones (--cuda-kernels fused: the bias and ReLU as the GEMM's epilogue, the ReLU backward in
    // the bias gradient's column sums).
    struct Gemm { int64_t in, out; };
    struct Mode { cu::GemmPrecision precision; cu::StepKernels kernels; };
    for (const Gemm g : {Gemm{256, 256}, Gemm{256, 128}, Gemm{128, 64}}) {
      for (const Mode m : {Mode{cu::GemmPrecision::kFp32, cu::StepKernels::kSeparate},
                           Mode{cu::GemmPrecision::kTf32, cu::StepKernels::kSeparate},
                           Mode{cu::GemmPrecision::kBf16, cu::StepKernels::kSeparate},
                           Mode{cu::GemmPrecision::kTf32, cu::StepKernels::kFused},
                           Mode{cu::GemmPrecision::kBf16, cu::StepKernels::kFused}}) {
        const cu::GemmPrecision precision = m.precision;
        const cu::StepKernels kernels = m.kernels;
        const char* name = precision == cu::GemmPrecision::kFp32 ? "/fp32" : precision == cu::GemmPrecision::kTf32 ? "/tf32" : "/bf16";
        const std::string shape = std::to_string(g.in) + "x" + std::to_string(g.out) + name +
                                  (kernels == cu::StepKernels::kFused ? "/fused" : "");
        benchmark::RegisterBenchmark(("dense_forward/" + shape + tag).c_str(), [rows, g, precision, kernels](benchmark::State& state) {
          cu::Stream stream;
          cu::Blas blas(stream.get(), precision, kernels);
          auto in = cu::to_device(random_floats(rows * g.in, 3));
          auto w = cu::to_device(random_floats(g.in * g.out, 4, 0.05f));
          auto b = cu::to_device(random_floats(g.out, 5));
          cu::DeviceBuffer<float> out(rows * g.out);
          timed(state, stream.get(), [&] {
            cu::dense_forward(blas, in.data(), rows, g.in, w.data(), b.data(), g.out, true, out.data());
          }, 4.0 * (rows * g.in + g.in * g.out + 2 * rows * g.out), 2.0 * rows * g.in * g.out);
        })->UseManualTime()->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("dense_backward/" + shape + tag).c_str(), [rows, g, precision, kernels](benchmark::State& state) {
          cu::Stream stream;
          cu::Blas blas(stream.get(), precision, kernels);
          auto in = cu::to_device(random_floats(rows * g.in, 3));
          auto out = cu::to_device(random_floats(rows * g.out, 6));
          auto d_out = cu::to_device(random_floats(rows * g.out, 7));
          auto w = cu::to_device(random_floats(g.in * g.out, 4, 0.05f));
          cu::DeviceBuffer<float> dw(g.in * g.out), db(g.out), dx(rows * g.in),
              partial(cu::column_sum_partials(rows, g.out));
          timed(state, stream.get(), [&] {
            cu::dense_backward(blas, in.data(), out.data(), d_out.data(), rows, g.in, w.data(), g.out, true, dw.data(),
                               db.data(), dx.data(), partial.data(), stream.get());
          }, 4.0 * (2 * rows * g.in + 4 * rows * g.out), 4.0 * rows * g.in * g.out);
        })->UseManualTime()->Unit(benchmark::kMicrosecond);
      }
    }

    // bf16 activations (--precision bf16 --cuda-kernels fused): the same shapes over bf16 rows.
    for (const Gemm g : {Gemm{256, 256}, Gemm{256, 128}, Gemm{128, 64}}) {
      const std::string shape = std::to_string(g.in) + "x" + std::to_string(g.out) + "/bf16-stored";
      benchmark::RegisterBenchmark(("dense_forward/" + shape + tag).c_str(), [rows, g](benchmark::State& state) {
        cu::Stream stream;
        cu::Blas blas(stream.get(), cu::GemmPrecision::kBf16, cu::StepKernels::kFused);
        auto in32 = cu::to_device(random_floats(rows * g.in, 3));
        auto w32 = cu::to_device(random_floats(g.in * g.out, 4, 0.05f));
        auto b = cu::to_device(random_floats(g.out, 5));
        cu::DeviceBuffer<cu::Bf16> in(rows * g.in), w(g.in * g.out), out(rows * g.out);
        cu::to_bf16(in32.data(), in.data(), rows * g.in, stream.get());
        cu::to_bf16(w32.data(), w.data(), g.in * g.out, stream.get());
        timed(state, stream.get(), [&] {
          cu::dense_forward_bf16(blas, in.data(), rows, g.in, w.data(), b.data(), g.out, true, out.data());
        }, 2.0 * (rows * g.in + g.in * g.out + rows * g.out), 2.0 * rows * g.in * g.out);
      })->UseManualTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("dense_backward/" + shape + tag).c_str(), [rows, g](benchmark::State& state) {
        cu::Stream stream;
        cu::Blas blas(stream.get(), cu::GemmPrecision::kBf16, cu::StepKernels::kFused);
        auto in32 = cu::to_device(random_floats(rows * g.in, 3));
        auto out32 = cu::to_device(random_floats(rows * g.out, 6));
        auto d_out32 = cu::to_device(random_floats(rows * g.out, 7));
        auto w32 = cu::to_device(random_floats(g.in * g.out, 4, 0.05f));
        cu::DeviceBuffer<cu::Bf16> in(rows * g.in), out(rows * g.out), d_out(rows * g.out), w(g.in * g.out),
            dx(rows * g.in);
        cu::to_bf16(in32.data(), in.data(), rows * g.in, stream.get());
        cu::to_bf16(out32.data(), out.data(), rows * g.out, stream.get());
        cu::to_bf16(d_out32.data(), d_out.data(), rows * g.out, stream.get());
        cu::to_bf16(w32.data(), w.data(), g.in * g.out, stream.get());
        cu::DeviceBuffer<float> dw(g.in * g.out), db(g.out), partial(cu::column_sum_partials(rows, g.out));
        timed(state, stream.get(), [&] {
          cu::dense_backward_bf16(blas, in.data(), out.data(), d_out.data(), rows, g.in, w.data(), g.out, true,
                                  dw.data(), db.data(), dx.data(), nullptr, partial.data(), stream.get());
        }, 2.0 * (2 * rows * g.in + 3 * rows * g.out), 4.0 * rows * g.in * g.out);
      })->UseManualTime()->Unit(benchmark::kMicrosecond);
    }

    benchmark::RegisterBenchmark(("column_sums/256" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      auto m = cu::to_device(random_floats(rows * 256, 8));
      cu::DeviceBuffer<float> partial(cu::column_sum_partials(rows, 256)), out(256);
      timed(state, stream.get(), [&] {
        cu::column_sums(m.data(), nullptr, rows, 256, partial.data(), out.data(), stream.get());
      }, 4.0 * rows * 256, rows * 256.0);
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    benchmark::RegisterBenchmark(("head_forward_backward/64+64" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      const int64_t f = 64, h = 64;
      auto ug = cu::to_device(random_floats(rows * f, 9)), ig = cu::to_device(random_floats(rows * f, 10));
      auto top = cu::to_device(random_floats(rows * h, 11)), w = cu::to_device(random_floats(f + h, 12));
      auto b = cu::to_device(std::vector<float>{0.1f});
      cu::DeviceBuffer<float> gmf(rows * f), logits(rows), dug(rows * f), dig(rows * f), dtop(rows * h), dw(f + h),
          db(1), partial(cu::column_sum_partials(rows, f + h));
      timed(state, stream.get(), [&] {
        cu::gmf_product(ug.data(), ig.data(), gmf.data(), rows * f, stream.get());
        cu::head_forward(gmf.data(), f, top.data(), h, w.data(), b.data(), rows, logits.data(), stream.get());
        cu::head_backward(logits.data(), ug.data(), ig.data(), gmf.data(), f, top.data(), h, w.data(), rows,
                          dug.data(), dig.data(), dtop.data(), dw.data(), db.data(), partial.data(), stream.get());
      }, 4.0 * rows * (f * 8 + h * 3), rows * 8.0 * (f + h));
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    benchmark::RegisterBenchmark(("head_forward_backward/64+64/fused" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      const int64_t f = 64, h = 64;
      cu::NeuMFShape shape;
      shape.factors = f;
      shape.layers = {2 * h, h};
      auto ug = cu::to_device(random_floats(rows * f, 9)), ig = cu::to_device(random_floats(rows * f, 10));
      auto top = cu::to_device(random_floats(rows * h, 11)), w = cu::to_device(random_floats(f + h, 12));
      auto b = cu::to_device(std::vector<float>{0.1f});
      cu::DeviceBuffer<float> logits(rows), dug(rows * f), dig(rows * f), dtop(rows * h), dw(f + h), db(1),
          partial(cu::neumf_partials(shape, rows));
      timed(state, stream.get(), [&] {
        cu::head_forward_fused(ug.data(), ig.data(), f, top.data(), h, w.data(), b.data(), rows, logits.data(),
                               stream.get());
        cu::head_backward_fused(logits.data(), ug.data(), ig.data(), f, top.data(), h, w.data(), rows, dug.data(),
                                dig.data(), dtop.data(), dw.data(), db.data(), partial.data(), stream.get());
      }, 4.0 * rows * (f * 6 + h * 3), rows * 8.0 * (f + h));
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    benchmark::RegisterBenchmark(("bce_loss_and_grad" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      auto logits = cu::to_device(random_floats(rows, 13)), labels = cu::to_device(std::vector<float>(rows, 0.0f));
      auto weights = cu::to_device(std::vector<float>(rows, 1.0f));
      cu::DeviceBuffer<float> dlogits(rows);
      cu::DeviceBuffer<double> row_loss(rows);
      cu::LossAccumulator accumulator(rows);
      timed(state, stream.get(), [&] {
        cu::bce_loss_and_grad(logits.data(), labels.data(), weights.data(), rows, 1.0f / rows, dlogits.data(),
                              row_loss.data(), stream.get());
        accumulator.add_batch(row_loss.data(), rows, static_cast<uint32_t>(rows), 0, nullptr, 0, stream.get());
      }, rows * (12.0 + 4 + 8 + 8), 0);
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    // One id table's step on a batch's rows: summed per row, then stepped (the separate kernels),
    // or both in one grouped_update (fused).
    for (const bool fused : {false, true}) {
      const std::string name = fused ? "row_groups_grouped_update/item:128" : "row_groups_sum_update/item:128";
      benchmark::RegisterBenchmark((name + tag).c_str(), [rows, fused](benchmark::State& state) {
        cu::Stream stream;
        const int64_t width = 128;
        auto ids = cu::to_device(random_ids(rows, kItems, 14));
        auto grads = cu::to_device(random_floats(rows * 2 * width, 15, 0.01f));
        auto table = cu::to_device(random_floats(static_cast<size_t>(kItems) * width, 16, 0.01f));
        cu::DeviceBuffer<float> s0(table.size()), s1(table.size()), sums(fused ? 0 : rows * width);
        s0.zero(stream.get());
        s1.zero(stream.get());
        cu::RowGroups groups(rows, kItems);
        tb::OptimizerParams p;
        timed(state, stream.get(), [&] {
          groups.build(ids.data(), rows, stream.get());
          if (fused) {
            cu::grouped_update(p, 1e-3f, table.data(), s0.data(), s1.data(), groups, grads.data(), 2 * width, width,
                               width, 1.0f / rows, cu::RowStepMasks{}, nullptr, stream.get());
            return;
          }
          cu::sum_row_gradients(groups, grads.data(), 2 * width, width, width, sums.data(), stream.get());
          cu::sparse_update(p, 1e-3f, table.data(), s0.data(), s1.data(), width, groups.rows(), groups.num_groups(),
                            groups.max_groups(), sums.data(), tb::RowL2{groups.starts(), 1.0f / rows}, nullptr,
                            stream.get());
        }, rows * (4.0 * width + 24), 0);
      })->UseManualTime()->Unit(benchmark::kMicrosecond);
    }

    // Item metadata of a shop catalog: a category, 1 to 3 tags and up to 8 text buckets per item,
    // two numbers; feature rows as wide as the id rows (64 GMF + 128 MLP columns).
    benchmark::RegisterBenchmark(("features_forward_backward/item:192" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      const int64_t f = 64, e = 128, w = f + e, numeric = 2;
      const uint32_t table_rows = 4096;
      std::vector<uint64_t> offsets{0};
      std::vector<uint32_t> feature_rows;
      uint32_t most = 0;
      for (uint32_t i = 0; i < kItems; ++i) {
        std::vector<uint32_t> mine{i % 64};
        for (uint32_t j = 0; j < 1 + i % 3; ++j) mine.push_back(64 + (i * 7 + j * 11) % 512);
        for (uint32_t j = 0; j < i % 9; ++j) mine.push_back(576 + (i * 13 + j * 17) % (table_rows - 576));
        std::sort(mine.begin(), mine.end());
        mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
        feature_rows.insert(feature_rows.end(), mine.begin(), mine.end());
        offsets.push_back(feature_rows.size());
        most = std::max<uint32_t>(most, static_cast<uint32_t>(mine.size()));
      }
      auto d_offsets = cu::to_device(offsets);
      auto d_rows = cu::to_device(feature_rows);
      auto d_weights = cu::to_device(std::vector<float>(feature_rows.size(), 0.25f));
      auto d_values = cu::to_device(random_floats(static_cast<size_t>(kItems) * numeric, 21));
      auto table = cu::to_device(random_floats(static_cast<size_t>(table_rows) * w, 22, 0.01f));
      auto projection = cu::to_device(random_floats(numeric * w, 23, 0.01f));
      auto ids = cu::to_device(random_ids(rows, kItems, 24));
      auto gmf = cu::to_device(random_floats(rows * f, 25)), acts = cu::to_device(random_floats(rows * 2 * e, 26));
      cu::DeviceBuffer<float> s0(table.size()), s1(table.size()), partial(cu::numeric_gradient_partials(rows, numeric, w)),
          d_projection(numeric * w);
      s0.zero(stream.get());
      s1.zero(stream.get());
      cu::FeatureView view;
      view.offsets = d_offsets.data();
      view.rows = d_rows.data();
      view.weights = d_weights.data();
      view.numeric = numeric;
      view.values = d_values.data();
      cu::FeatureGroups groups(rows, table_rows, most);
      cu::DeviceBuffer<float> sums(cu::FeatureGroups::max_groups_for(rows, table_rows, most) * w);
      tb::OptimizerParams p;
      const double entries = static_cast<double>(feature_rows.size()) / kItems * rows;
      timed(state, stream.get(), [&] {
        cu::add_features(view, ids.data(), rows, table.data(), projection.data(), f, e, gmf.data(), f, acts.data(),
                         2 * e, e, stream.get());
        cu::numeric_gradient(view, ids.data(), rows, gmf.data(), f, acts.data(), 2 * e, e, f, e, partial.data(),
                             d_projection.data(), stream.get());
        groups.build(view, ids.data(), rows, stream.get());
        cu::sum_feature_gradients(groups, gmf.data(), f, acts.data(), 2 * e, e, f, e, sums.data(), stream.get());
        cu::sparse_update(p, 1e-3f, table.data(), s0.data(), s1.data(), w, groups.rows(), groups.num_groups(),
                          groups.max_groups(), sums.data(), tb::RowL2{groups.starts(), 1.0f / rows}, nullptr,
                          stream.get());
      }, entries * 4.0 * w * 2 + rows * 4.0 * w * 4, entries * 4.0 * w);
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    benchmark::RegisterBenchmark(("fill_rows/bce/4neg" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      // 20 positives per user, sorted by (user, item).
      std::vector<uint32_t> user, item;
      std::vector<uint64_t> offsets{0};
      std::mt19937 rng(17);
      for (uint32_t u = 0; u < kUsers; ++u) {
        std::vector<uint32_t> mine = random_ids(20, kItems, u);
        std::sort(mine.begin(), mine.end());
        mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
        for (uint32_t i : mine) {
          user.push_back(u);
          item.push_back(i);
        }
        offsets.push_back(item.size());
      }
      auto d_user = cu::to_device(user), d_item = cu::to_device(item);
      auto d_weight = cu::to_device(std::vector<float>(user.size(), 1.0f));
      auto d_offsets = cu::to_device(offsets);
      cu::PositivesView view{d_user.data(), d_item.data(), d_weight.data(), d_offsets.data(), kItems, nullptr, nullptr};
      view.count = user.size();
      cu::DeviceBuffer<uint32_t> order(user.size()), users(rows), items(rows);
      cu::DeviceBuffer<float> labels(rows), weights(rows);
      cu::Shuffler shuffler(user.size());
      shuffler.run(1, 0, order.data(), stream.get());
      cu::SampleSpec spec;
      spec.negatives = 4;
      timed(state, stream.get(), [&] {
        cu::fill_rows(spec, view, order.data(), 0, static_cast<uint32_t>(rows), users.data(), items.data(),
                      labels.data(), weights.data(), nullptr, nullptr, nullptr, stream.get());
      }, rows * 16.0, 0);
    })->UseManualTime()->Unit(benchmark::kMicrosecond);

    benchmark::RegisterBenchmark(("dense_update/adam/params:107k" + tag).c_str(), [rows](benchmark::State& state) {
      cu::Stream stream;
      const int64_t count = 256 * 256 + 256 * 128 + 128 * 64 + 448 + 129;
      auto w = cu::to_device(random_floats(count, 18)), g = cu::to_device(random_floats(count, 19));
      cu::DeviceBuffer<float> s0(count), s1(count);
      s0.zero(stream.get());
      s1.zero(stream.get());
      tb::OptimizerParams p;
      timed(state, stream.get(), [&] {
        cu::dense_update(p, 1e-3f, w.data(), s0.data(), s1.data(), g.data(), count, nullptr, stream.get());
      }, count * 28.0, count * 10.0);
    })->UseManualTime()->Unit(benchmark::kMicrosecond);
  }

  benchmark::RegisterBenchmark("shuffle/positives:20M", [](benchmark::State& state) {
    cu::Stream stream;
    const uint64_t count = 20000000;
    cu::Shuffler shuffler(count);
    cu::DeviceBuffer<uint32_t> order(count);
    timed(state, stream.get(), [&] { shuffler.run(1, 0, order.data(), stream.get()); }, count * 40.0, 0);
  })->UseManualTime()->Unit(benchmark::kMillisecond);

  // Batch inference, one chunk as GpuScorer runs it: the users' first-layer halves, every logit of
  // 4096 users x 25K items through the fused tower, 20 seen items per user excluded, the top 25
  // selected. items/s counts (user, item) pairs; users_per_second extrapolates to a job.
  benchmark::RegisterBenchmark("score_top_k/paper/users:4096/items:25000/k:25", [](benchmark::State& state) {
    cu::Stream stream;
    const int64_t users = 4096, items = 25000, f = 8, e = 32, k = 25, seen = 20;
    const std::vector<int64_t> hidden{32, 16, 8};
    const std::vector<int64_t> padded = cu::fused_tower_widths(hidden);
    auto user_mlp = cu::to_device(random_floats(users * e, 30)), user_gmf = cu::to_device(random_floats(users * f, 31));
    auto item_mlp = cu::to_device(random_floats(items * e, 32)), item_gmf = cu::to_device(random_floats(items * f, 33));
    const std::vector<float> w0 = random_floats(2 * e * 32, 34, 0.2f), b0 = random_floats(32, 35, 0.1f);
    const std::vector<float> w1 = random_floats(32 * 16, 36, 0.25f), b1 = random_floats(16, 37, 0.1f);
    const std::vector<float> w2 = random_floats(16 * 8, 38, 0.35f), b2 = random_floats(8, 39, 0.1f);
    const std::vector<float> head = random_floats(f + 8, 40, 0.3f);
    auto d_w0 = cu::to_device(w0), d_b0 = cu::to_device(b0), d_head = cu::to_device(head);
    const std::vector<const float*> weights{w0.data(), w1.data(), w2.data()}, biases{b0.data(), b1.data(), b2.data()};
    auto tower = cu::to_device(cu::pack_tower(hidden, padded, weights, biases, head.data() + f));
    cu::DeviceBuffer<float> item_part(items * padded[0]);
    cu::first_layer_half(item_mlp.data(), items, e, d_w0.data() + e * 32, nullptr, 32, padded[0], item_part.data(),
                         stream.get());
    cu::CatalogModel model;
    model.items = items;
    model.factors = f;
    model.item_gmf = item_gmf.data();
    model.widths = padded;
    model.item_part = item_part.data();
    model.tower = tower.data();
    model.tower_floats = static_cast<int64_t>(tower.size());
    model.head_bias = 0.1f;
    std::vector<uint32_t> ids(users);
    for (uint32_t u = 0; u < users; ++u) ids[u] = u;
    std::vector<uint64_t> offsets{0};
    for (int64_t u = 0; u < users; ++u) offsets.push_back(offsets.back() + seen);
    auto d_ids = cu::to_device(ids), d_seen = cu::to_device(random_ids(users * seen, items, 41));
    auto d_offsets = cu::to_device(offsets);
    cu::DeviceBuffer<float> rows(users * e), head_rows(users * f), user_part(users * padded[0]), scores(users * items),
        top_scores(users * k);
    cu::DeviceBuffer<uint32_t> top_items(users * k);
    timed(state, stream.get(), [&] {
      cu::gather_user_inputs(user_mlp.data(), e, user_gmf.data(), f, d_head.data(), d_ids.data(), users, nullptr,
                             rows.data(), head_rows.data(), stream.get());
      cu::first_layer_half(rows.data(), users, e, d_w0.data(), d_b0.data(), 32, padded[0], user_part.data(), stream.get());
      cu::score_catalog_fused(model, user_part.data(), head_rows.data(), users, scores.data(), items, stream.get());
      cu::exclude_items(scores.data(), users, items, d_offsets.data(), d_seen.data(), stream.get());
      cu::select_top_k(scores.data(), users, items, items, nullptr, k, top_items.data(), top_scores.data(),
                       stream.get());
    }, users * items * 8.0, users * items * (2.0 * (32 * 16 + 16 * 8 + 8 + f) + 2.0 * 32));
    state.SetItemsProcessed(users * items * state.iterations());
    state.counters["users_per_second"] = benchmark::Counter(users, benchmark::Counter::kIsIterationInvariantRate);
  })->UseManualTime()->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark("top_k/users:1024/items:27000/k:10", [](benchmark::State& state) {
    cu::Stream stream;
    const int64_t users = 1024, n = kItems;
    auto scores = cu::to_device(random_floats(users * n, 20));
    cu::DeviceBuffer<uint32_t> out(users * 10);
    timed(state, stream.get(), [&] { cu::top_k(scores.data(), users, n, n, 10, out.data(), stream.get()); },
          users * n * 4.0 * 10, 0);
  })->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  std::string reason;
  cu::DeviceInfo info;
  if (!cu::probe(&reason, &info)) {
    std::printf("bench_kernels_cuda: skipped: %s\n", reason.c_str());
    return 0;
  }
  benchmark::AddCustomContext("device", info.name);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
