#include "host/export_onnx.h"
#include "host/model_dir.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "host/inference.h"
#include "host/protobuf_writer.h"
#include "tastebud/engine/model_io.h"
#include "tastebud/error.h"

namespace tastebud::host {
namespace {

namespace fs = std::filesystem;

// Field numbers and enums of onnx/onnx.proto (stable since IR version 3).
namespace onnx {
enum ModelField : uint32_t { kIrVersion = 1, kProducerName = 2, kProducerVersion = 3, kGraph = 7,
                             kOpsetImport = 8, kMetadataProps = 14 };
enum GraphField : uint32_t { kNode = 1, kGraphName = 2, kInitializer = 5, kInput = 11, kOutput = 12 };
enum NodeField : uint32_t { kNodeInput = 1, kNodeOutput = 2, kNodeName = 3, kOpType = 4, kAttribute = 5 };
enum AttributeField : uint32_t { kAttrName = 1, kAttrInt = 3, kAttrType = 20 };
enum TensorField : uint32_t { kDims = 1, kDataType = 2, kTensorName = 8, kRawData = 9 };
enum ValueInfoField : uint32_t { kValueName = 1, kValueType = 2 };
constexpr uint32_t kTypeTensor = 1, kTensorElemType = 1, kTensorShape = 2, kShapeDim = 1, kDimParam = 2;
constexpr uint32_t kOpsetVersion = 2, kEntryKey = 1, kEntryValue = 2;
constexpr int64_t kFloat = 1, kInt64 = 7;   // TensorProto.DataType
constexpr int64_t kAttributeInt = 2;        // AttributeProto.AttributeType
}  // namespace onnx

ProtoWriter tensor(const std::string& name, const std::vector<int64_t>& dims, int64_t type, const void* data,
                   size_t bytes) {
  ProtoWriter t;
  t.packed_int64(onnx::kDims, dims).int64(onnx::kDataType, type).bytes(onnx::kTensorName, name);
  t.bytes(onnx::kRawData, std::string_view(static_cast<const char*>(data), bytes));
  return t;
}

ProtoWriter float_tensor(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  return tensor(name, dims, onnx::kFloat, values.data(), values.size() * sizeof(float));
}

// A 1-D tensor input or output of unknown length N.
ProtoWriter vector_value(const std::string& name, int64_t type) {
  ProtoWriter dim, shape, tensor_type, type_proto, value;
  dim.bytes(onnx::kDimParam, "N");
  shape.message(onnx::kShapeDim, dim);
  tensor_type.int64(onnx::kTensorElemType, type).message(onnx::kTensorShape, shape);
  type_proto.message(onnx::kTypeTensor, tensor_type);
  value.bytes(onnx::kValueName, name).message(onnx::kValueType, type_proto);
  return value;
}

class Graph {
 public:
  void initializer(ProtoWriter t) { graph_.message(onnx::kInitializer, t); }
  // Adds a node; returns its output's name.
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output,
                   const std::vector<std::pair<std::string, int64_t>>& int_attributes = {}) {
    ProtoWriter n;
    for (const std::string& in : inputs) n.bytes(onnx::kNodeInput, in);
    n.bytes(onnx::kNodeOutput, output).bytes(onnx::kNodeName, output).bytes(onnx::kOpType, op);
    for (const auto& [name, value] : int_attributes) {
      ProtoWriter a;
      a.bytes(onnx::kAttrName, name).int64(onnx::kAttrInt, value).int64(onnx::kAttrType, onnx::kAttributeInt);
      n.message(onnx::kAttribute, a);
    }
    graph_.message(onnx::kNode, n);
    return output;
  }
  ProtoWriter& proto() { return graph_; }

 private:
  ProtoWriter graph_;
};

// {"users": {"u1": 0, ...}, "items": {...}}, one id a line, rows in order (written as text:
// a JSON object of a million keys built in memory would cost more than the model).
std::string ids_json(const std::vector<std::string>& users, const std::vector<std::string>& items) {
  std::string text = "{\n";
  auto map = [&](const char* name, const std::vector<std::string>& ids, bool last) {
    text += fmt::format(" \"{}\": {{", name);
    for (size_t r = 0; r < ids.size(); ++r) {
      text += fmt::format("{}\n  {}: {}", r == 0 ? "" : ",", nlohmann::json(ids[r]).dump(), r);
    }
    text += ids.empty() ? "}" : "\n }";
    text += last ? "\n" : ",\n";
  };
  map("users", users, false);
  map("items", items, true);
  return text + "}\n";
}

std::vector<int64_t> dims_of(const Tensor& t) { return std::vector<int64_t>(t.shape.begin(), t.shape.end()); }

}  // namespace

std::string onnx_model_bytes(const ModelParams& p, const std::vector<std::pair<std::string, std::string>>& metadata) {
  const ModelConfig& c = p.config;
  if (c.has_metadata()) throw Error("ONNX export takes an id-only model: fold the metadata in first (fold_features)");
  if (c.has_context()) {
    throw Error("ONNX export: this model was trained with --context, and the exported graph has no context "
                "input; export a model trained without --context");
  }
  Graph g;
  std::vector<std::string> head_inputs;
  if (c.has_gmf()) {
    g.initializer(float_tensor("user_gmf", dims_of(p.user_gmf), p.user_gmf.values));
    g.initializer(float_tensor("item_gmf", dims_of(p.item_gmf), p.item_gmf.values));
    const std::string u = g.node("Gather", {"user_gmf", "user"}, "user_gmf_rows", {{"axis", 0}});
    const std::string i = g.node("Gather", {"item_gmf", "item"}, "item_gmf_rows", {{"axis", 0}});
    head_inputs.push_back(g.node("Mul", {u, i}, "gmf"));
  }
  if (c.has_mlp()) {
    g.initializer(float_tensor("user_mlp", dims_of(p.user_mlp), p.user_mlp.values));
    g.initializer(float_tensor("item_mlp", dims_of(p.item_mlp), p.item_mlp.values));
    const std::string u = g.node("Gather", {"user_mlp", "user"}, "user_mlp_rows", {{"axis", 0}});
    const std::string i = g.node("Gather", {"item_mlp", "item"}, "item_mlp_rows", {{"axis", 0}});
    std::string x = g.node("Concat", {u, i}, "mlp_input", {{"axis", 1}});
    for (size_t j = 0; j < c.num_dense_layers(); ++j) {
      const std::string w = fmt::format("dense{}_weight", j), b = fmt::format("dense{}_bias", j);
      g.initializer(float_tensor(w, dims_of(p.weights[j]), p.weights[j].values));
      g.initializer(float_tensor(b, dims_of(p.biases[j]), p.biases[j].values));
      x = g.node("Relu", {g.node("Gemm", {x, w, b}, fmt::format("dense{}", j))}, fmt::format("relu{}", j));
    }
    head_inputs.push_back(x);
  }
  const std::string head_input = head_inputs.size() == 1 ? head_inputs[0]
                                 : g.node("Concat", head_inputs, "head_input", {{"axis", 1}});
  g.initializer(float_tensor("head_weight", {static_cast<int64_t>(c.head_inputs()), 1}, p.head_weight.values));
  g.initializer(float_tensor("head_bias", {1}, p.head_bias.values));
  const int64_t flat = -1;
  g.initializer(tensor("score_shape", {1}, onnx::kInt64, &flat, sizeof(flat)));
  const std::string logit = g.node("Gemm", {head_input, "head_weight", "head_bias"}, "logit");
  g.node("Reshape", {g.node("Sigmoid", {logit}, "probability"), "score_shape"}, "score");
  g.proto().bytes(onnx::kGraphName, "tastebud_" + to_string(c.kind));
  g.proto().message(onnx::kInput, vector_value("user", onnx::kInt64));
  g.proto().message(onnx::kInput, vector_value("item", onnx::kInt64));
  g.proto().message(onnx::kOutput, vector_value("score", onnx::kFloat));

  ProtoWriter model, opset;
  opset.int64(onnx::kOpsetVersion, kOnnxOpset);
  model.int64(onnx::kIrVersion, kOnnxIrVersion)
      .bytes(onnx::kProducerName, "tastebud")
      .bytes(onnx::kProducerVersion, "0.1.0")
      .message(onnx::kGraph, g.proto())
      .message(onnx::kOpsetImport, opset);
  for (const auto& [key, value] : metadata) {
    ProtoWriter entry;
    entry.bytes(onnx::kEntryKey, key).bytes(onnx::kEntryValue, value);
    model.message(onnx::kMetadataProps, entry);
  }
  return model.str();
}

OnnxExport export_onnx(const fs::path& model_dir, const fs::path& out) {
  check_output_apart(out, model_dir, {}, "--out");
  check_output_apart(out.string() + ".ids.json", model_dir, {}, "--out (its ids file)");
  // load_model_dir folds a metadata model into its id-only twin, as batch jobs serve it.
  const ModelData m = load_model_dir(model_dir);
  TB_CHECK(!m.sequence, fmt::format("{}: ONNX export of the sequence model (sasrec) is not written yet", model_dir.string()));
  if (!m.params) {
    throw Error(fmt::format("ONNX export is for the neural models (neumf, gmf, mlp, mf); {} is a {} recipe, "
                            "whose answers are tables, not a network",
                            model_dir.string(), to_string(m.kind)));
  }
  OnnxExport result;
  result.model = out;
  result.ids = out.string() + ".ids.json";
  result.users = static_cast<uint32_t>(m.user_ids.size());
  result.items = static_cast<uint32_t>(m.item_ids.size());
  const std::string bytes = onnx_model_bytes(*m.params, {{"tastebud.model", std::string(to_string(m.kind))},
                                                         {"tastebud.ids", result.ids.filename().string()},
                                                         {"tastebud.score", "probability: sigmoid of the logit"}});
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  write_file_atomically(result.ids, ids_json(m.user_ids, m.item_ids));
  write_file_atomically(out, bytes);
  result.bytes = bytes.size();
  return result;
}

}  // namespace tastebud::host
