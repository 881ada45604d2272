// One column file of a dataset directory: a 32-byte header (magic, format version, element type,
// element count) followed by the elements, little-endian. See datasets/FORMAT.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace tastebud::datasets {

inline constexpr char kColumnMagic[8] = {'T', 'B', 'C', 'O', 'L', 'U', 'M', 'N'};
inline constexpr uint32_t kColumnVersion = 1;
// meta.json "version". 2: interaction context fields are one u32 per row (kNullContext = null)
// without an offsets column.
inline constexpr uint32_t kDatasetFormatVersion = 2;

enum class DType : uint32_t { U8 = 1, U32 = 2, U64 = 3, I64 = 4, F32 = 5, Char = 6 };

struct ColumnHeader {
  char magic[8];
  uint32_t version;
  uint32_t dtype;
  uint64_t count;
  uint64_t reserved;  // kPayloadCrc | the CRC-32 of the elements; zero in files of before
};
static_assert(sizeof(ColumnHeader) == 32);

// Set in ColumnHeader::reserved when its low 32 bits are the CRC-32 (zlib's) of the elements:
// `tastebud info --verify` (verify_columns) checks it. Files without it are not checked.
inline constexpr uint64_t kPayloadCrc = uint64_t{1} << 32;

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::U32; }
template <> constexpr DType dtype_of<uint64_t>() { return DType::U64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<char>() { return DType::Char; }

// Writes one column file in pieces: the header up front, then append() until `count` elements
// are in, then finish(), which starts the write-back (DirectoryReplacement::commit in
// base/directory_swap.h waits for it). Throws tastebud::Error naming the file.
class ColumnWriter {
 public:
  ColumnWriter(std::filesystem::path path, DType dtype, size_t element_size, uint64_t count);
  ~ColumnWriter();
  ColumnWriter(const ColumnWriter&) = delete;
  ColumnWriter& operator=(const ColumnWriter&) = delete;

  void append(const void* data, size_t bytes);
  template <typename T>
  void append(std::span<const T> values) {
    append(values.data(), values.size_bytes());
  }
  void finish();

 private:
  void flush();

  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t expected_bytes_ = 0, written_bytes_ = 0;
  uint32_t crc_ = 0;  // of the elements appended so far
  std::string buffer_;
};

template <typename T>
void write_column(const std::filesystem::path& path, std::span<const T> values) {
  ColumnWriter writer(path, dtype_of<T>(), sizeof(T), values.size());
  writer.append(values);
  writer.finish();
}

// Writes `count` elements produced by gather(i) for i in [0, count), without building the whole
// column in memory (the gathered columns of a sort are as large as the input).
template <typename T, typename Gather>
void write_column_gathered(const std::filesystem::path& path, uint64_t count, Gather&& gather) {
  ColumnWriter writer(path, dtype_of<T>(), sizeof(T), count);
  constexpr size_t kChunk = 1 << 16;
  std::vector<T> chunk(kChunk);
  for (uint64_t start = 0; start < count; start += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, count - start));
    for (size_t i = 0; i < n; ++i) chunk[i] = gather(start + i);
    writer.append(chunk.data(), n * sizeof(T));
  }
  writer.finish();
}

// Writes a small text file (meta.json, schemas) through a temporary name and fsync.
void write_text_file(const std::filesystem::path& path, const std::string& text);

}  // namespace tastebud::datasets
