// The protocol buffers wire format, write side only: enough to emit an ONNX model without
// libprotobuf. A message is its fields' bytes; a nested message is written as a length-delimited
// field holding those bytes (https://protobuf.dev/programming-guides/encoding/).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tastebud::host {

class ProtoWriter {
 public:
  // Wire type 0: int32, int64, uint64, bool and enums (a negative int64 takes ten bytes).
  ProtoWriter& varint(uint32_t field, uint64_t value);
  ProtoWriter& int64(uint32_t field, int64_t value) { return varint(field, static_cast<uint64_t>(value)); }
  // Wire type 5: float.
  ProtoWriter& fixed32_float(uint32_t field, float value);
  // Wire type 2: strings, bytes, nested messages and packed repeated scalars.
  ProtoWriter& bytes(uint32_t field, std::string_view value);
  ProtoWriter& message(uint32_t field, const ProtoWriter& nested) { return bytes(field, nested.str()); }
  ProtoWriter& packed_int64(uint32_t field, std::span<const int64_t> values);

  const std::string& str() const { return bytes_; }

 private:
  void tag(uint32_t field, uint32_t wire_type) { raw_varint((uint64_t{field} << 3) | wire_type); }
  void raw_varint(uint64_t value);
  std::string bytes_;
};

}  // namespace tastebud::host
