// A dataset directory as written by `tastebud import`: binary column files with a versioned
// header, opened by memory map. See datasets/FORMAT.md for the layout on disk.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tastebud::datasets {

// A read-only memory map of one file; move-only, unmapped on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Strings stored as offsets (uint64, count + 1) and one byte blob.
class StringTable {
 public:
  StringTable() = default;
  StringTable(std::span<const uint64_t> offsets, std::span<const char> bytes)
      : offsets_(offsets), bytes_(bytes) {}
  size_t size() const { return offsets_.empty() ? 0 : offsets_.size() - 1; }
  std::string_view operator[](size_t i) const {
    return {bytes_.data() + offsets_[i], static_cast<size_t>(offsets_[i + 1] - offsets_[i])};
  }

 private:
  std::span<const uint64_t> offsets_;
  std::span<const char> bytes_;
};

// A categorical field, possibly multi-valued: the values of row r are
// values[offsets[r] .. offsets[r + 1]), each an index into vocabulary. An empty slice is null.
struct CategoricalField {
  std::string name;
  StringTable vocabulary;
  std::span<const uint64_t> offsets;
  std::span<const uint32_t> values;
};

// A contextual categorical field of the interactions (DEVICE_TYPE, ...): at most one value per
// event, so one vocabulary index per row and no offsets; kNullContext marks an empty field.
inline constexpr uint32_t kNullContext = UINT32_MAX;
struct ContextField {
  std::string name;
  StringTable vocabulary;
  std::span<const uint32_t> values;  // one per interaction; kNullContext = null
};

// A numerical field as float; NaN marks null.
struct NumericalField {
  std::string name;
  std::span<const float> values;
};

// The textual field as hashed tokens (FNV-1a of the lower-cased token, modulo 2^20); row r's
// tokens are tokens[offsets[r] .. offsets[r + 1]).
struct TextualField {
  std::string name;
  std::span<const uint64_t> offsets;
  std::span<const uint32_t> tokens;
};

inline constexpr uint32_t kTextHashBuckets = 1u << 20;

// User or item metadata, one row per dense index (num_users or num_items rows). Rows of ids that
// never appeared in the Users/Items file have has_row == 0 and null fields.
struct Metadata {
  std::span<const uint8_t> has_row;
  std::vector<CategoricalField> categorical;
  std::vector<NumericalField> numerical;
  std::vector<TextualField> textual;        // at most one, items only
  std::span<const int64_t> creation_timestamp;  // items only; empty when absent; INT64_MIN = null
};

// Interactions sorted by (user, timestamp, item, event_type); duplicates stored once.
struct Interactions {
  std::span<const uint32_t> user;
  std::span<const uint32_t> item;
  std::span<const int64_t> timestamp;    // Unix seconds
  std::span<const uint32_t> event_type;  // index into Dataset::event_types
  std::span<const float> event_value;    // NaN = null (also when the column is absent)
  // Rows of user u are [user_offsets[u], user_offsets[u + 1]); num_users + 1 entries.
  std::span<const uint64_t> user_offsets;
  // IMPRESSION lists as item indices, CSR over rows; both empty when the column is absent.
  std::span<const uint64_t> impression_offsets;
  std::span<const uint32_t> impression_items;
  // Contextual categorical fields (DEVICE_TYPE, ...), one value or kNullContext per row.
  std::vector<ContextField> context;
  // Contextual numerical fields (a number per event), NaN = null.
  std::vector<NumericalField> numerical;

  size_t size() const { return user.size(); }
};

// Hands the whole pages within [begin, end) of a read-only mapping back to the kernel
// (MADV_DONTNEED): read again from the file when touched, out of the resident set until then.
void release_pages(const void* begin, const void* end);

// Calls visit(r, column[r]) for every element of a mapped column, handing each megabyte's pages
// back behind it: a pass over every column of a large dataset does not keep it resident.
template <typename T, typename Fn>
void scan_released(std::span<const T> column, Fn&& visit) {
  constexpr size_t kChunk = size_t{1} << 20;
  for (size_t begin = 0; begin < column.size(); begin += kChunk) {
    const size_t end = std::min(column.size(), begin + kChunk);
    for (size_t r = begin; r < end; ++r) visit(r, column[r]);
    release_pages(column.data() + begin, column.data() + end);
  }
}

// Recomputes the CRC-32 of every column of the dataset directory `dir` that records one and throws
// Error "corrupt: FILE: ..." at the first that differs (tastebud info --verify). Reads every byte.
void verify_columns(const std::filesystem::path& dir);

class Dataset {
 public:
  // Opens a dataset directory; throws tastebud::Error naming the file on a missing file, a bad
  // magic number, a version this build does not read, or a size that does not match.
  static Dataset open(const std::filesystem::path& dir);

  uint32_t num_users() const { return static_cast<uint32_t>(user_ids.size()); }
  uint32_t num_items() const { return static_cast<uint32_t>(item_ids.size()); }

  std::filesystem::path dir;
  StringTable user_ids;     // dense user index -> USER_ID
  StringTable item_ids;     // dense item index -> ITEM_ID
  StringTable event_types;  // event type index -> EVENT_TYPE; {""} when the column is absent
  Interactions interactions;
  Metadata users;
  Metadata items;
  // The Avro-record schemas (JSON text) used at import, given or inferred; empty when the dataset
  // had no such file.
  std::string interactions_schema, users_schema, items_schema;

 private:
  std::vector<std::shared_ptr<MappedFile>> files_;
};

}  // namespace tastebud::datasets
