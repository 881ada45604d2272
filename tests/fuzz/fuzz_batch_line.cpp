// One batch-infer or batch-segment line: whatever it holds, the answer is one line of valid JSON
// with "input", "output" and "error", and nothing is thrown (a line never ends the job).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "tastebud/error.h"

using namespace tastebud;
using namespace tastebud::host;

namespace {

Tensor tensor(std::vector<uint64_t> shape, std::vector<float> values) { return Tensor{"", std::move(shape), std::move(values)}; }

ModelData gmf_model() {
  ModelData m;
  m.kind = ModelType::kGMF;
  m.user_ids = {"u0", "u1"};
  m.item_ids = {"i0", "i1", "i2", "i3", "i4"};
  ModelParams p;
  p.config.kind = ModelKind::kGMF;
  p.config.num_users = 2;
  p.config.num_items = 5;
  p.config.factors = 1;
  p.user_gmf = tensor({2, 1}, {1, -1});
  p.item_gmf = tensor({5, 1}, {0.5f, -1, 2, 0, 1.5f});
  p.head_weight = tensor({1}, {1});
  p.head_bias = tensor({1}, {0});
  m.params = p;
  m.seen.offsets = {0, 2, 3};
  m.seen.items = {2, 4, 4};
  return m;
}

Recommender make(const std::string& filter) {
  InferenceContext context;
  ItemCatalog& c = context.catalog;
  c.item_ids = {"i0", "i1", "i2", "i3", "i4"};
  c.numerical.push_back({"PRICE", {1, 2, 30, 4, 50}});
  c.categorical.push_back({"GENRE", {"Comedy", "Drama"}, {0, 1, 2, 3, 4, 5}, {0, 1, 0, 1, 0}});
  c.event_types = {"view"};
  InferenceOptions options;
  options.filter = filter;
  options.device = "cpu";
  return Recommender(gmf_model(), std::move(context), options);
}

void check_line(const std::string& out) {
  const nlohmann::json j = nlohmann::json::parse(out);  // throws (a finding) if not JSON
  if (!j.is_object() || !j.contains("input") || !j.contains("output") || !j.contains("error")) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Recommender plain = make("");
  static const Recommender filtered = make("EXCLUDE ItemID WHERE Items.GENRE IN ($G) | INCLUDE ItemID WHERE Items.PRICE < $MAX");
  const std::string line(reinterpret_cast<const char*>(data), size);
  check_line(plain.answer(line));
  check_line(filtered.answer(line));
  check_line(plain.segment(line, 3));
  return 0;
}
