#include "host/protobuf_writer.h"

#include <cstring>

namespace tastebud::host {

void ProtoWriter::raw_varint(uint64_t value) {
  while (value >= 0x80) {
    bytes_ += static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  bytes_ += static_cast<char>(value);
}

ProtoWriter& ProtoWriter::varint(uint32_t field, uint64_t value) {
  tag(field, 0);
  raw_varint(value);
  return *this;
}

ProtoWriter& ProtoWriter::fixed32_float(uint32_t field, float value) {
  tag(field, 5);
  char little_endian[4];
  std::memcpy(little_endian, &value, 4);  // x86-64 and aarch64 are little-endian, as the format is
  bytes_.append(little_endian, 4);
  return *this;
}

ProtoWriter& ProtoWriter::bytes(uint32_t field, std::string_view value) {
  tag(field, 2);
  raw_varint(value.size());
  bytes_.append(value);
  return *this;
}

ProtoWriter& ProtoWriter::packed_int64(uint32_t field, std::span<const int64_t> values) {
  ProtoWriter packed;
  for (int64_t v : values) packed.raw_varint(static_cast<uint64_t>(v));
  return bytes(field, packed.str());
}

}  // namespace tastebud::host
