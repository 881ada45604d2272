// ONNX export of the NeuMF family (`tastebud export --format onnx`): the same network as the
// scorer, for serving on any ONNX runtime.
//
// Graph: inputs `user` and `item` (int64 row indices, shape [N]); the id embeddings are
// initializers read with Gather; GMF is Mul of the two factor rows; the MLP is Concat of the two
// embedding rows then Gemm + Relu per layer; the head is Gemm over Concat(GMF, MLP top) and the
// output `score` (float, shape [N]) is its Sigmoid: the probability batch-infer reports. A model
// with metadata is exported as its folded id-only twin (what batch jobs score with), so cold
// users and items keep their metadata scores. The protobuf is written by host/protobuf_writer.h
// (no libprotobuf): ONNX IR version 8, opset 17.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tastebud/engine/model.h"
#include "tastebud/engine/sequence_model.h"

namespace tastebud::host {

inline constexpr int64_t kOnnxIrVersion = 8;
inline constexpr int64_t kOnnxOpset = 17;

// The serialized ModelProto of an id-only model; metadata goes to metadata_props.
std::string onnx_model_bytes(const ModelParams& params,
                             const std::vector<std::pair<std::string, std::string>>& metadata);

// The sequence model (sasrec): input `items` (int64 item rows, shape [n], a user's latest items
// oldest first, n at most max_sequence), output `score` (float, [num_items]): the probability of
// every item coming next, sigmoid(h . E), as batch-infer shows it. Standard ops only: Gather,
// Slice, MatMul, Gemm, LayerNormalization, Softmax with the causal mask added, Relu, Sigmoid.
std::string onnx_sequence_bytes(const SequenceParams& params,
                                const std::vector<std::pair<std::string, std::string>>& metadata);

struct OnnxExport {
  std::filesystem::path model, ids;  // out and out + ".ids.json"
  uint32_t users = 0, items = 0;
  uint64_t bytes = 0;
};

// Exports the model directory's model to `out`, and beside it `out.ids.json` mapping external ids
// to rows ({"users": {"u1": 0, ...}, "items": {...}}), each written atomically. Throws for a
// recipe and for a model trained with context (the graph has no context input).
OnnxExport export_onnx(const std::filesystem::path& model_dir, const std::filesystem::path& out);

}  // namespace tastebud::host
