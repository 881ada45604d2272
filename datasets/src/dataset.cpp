#include "tastebud/datasets/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tastebud/atomic_file.h"
#include "tastebud/checksum.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::datasets {

namespace fs = std::filesystem;

// ---- MappedFile ----------------------------------------------------------------------------

MappedFile::MappedFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(fmt::format("{}: cannot stat: {}", path.string(), std::strerror(err)));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(fmt::format("{}: cannot map: {}", path.string(), std::strerror(err)));
    }
    data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

// ---- writing -------------------------------------------------------------------------------

namespace {

void write_all(int fd, const char* data, size_t size, const fs::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("{}: write failed: {}", path.string(), std::strerror(errno)));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

ColumnWriter::ColumnWriter(fs::path path, DType dtype, size_t element_size, uint64_t count)
    : path_(std::move(path)), expected_bytes_(count * element_size) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(fmt::format("{}: cannot create: {}", path_.string(), std::strerror(errno)));
  ColumnHeader header{};
  std::memcpy(header.magic, kColumnMagic, sizeof(kColumnMagic));
  header.version = kColumnVersion;
  header.dtype = static_cast<uint32_t>(dtype);
  header.count = count;
  buffer_.reserve(size_t{4} << 20);
  buffer_.append(reinterpret_cast<const char*>(&header), sizeof(header));
}

ColumnWriter::~ColumnWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void ColumnWriter::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), path_);
  buffer_.clear();
}

void ColumnWriter::append(const void* data, size_t bytes) {
  written_bytes_ += bytes;
  crc_ = crc32_update(crc_, std::string_view(static_cast<const char*>(data), bytes));
  if (buffer_.size() + bytes > buffer_.capacity()) {
    flush();
    if (bytes >= buffer_.capacity()) {
      write_all(fd_, static_cast<const char*>(data), bytes, path_);
      return;
    }
  }
  buffer_.append(static_cast<const char*>(data), bytes);
}

void ColumnWriter::finish() {
  if (written_bytes_ != expected_bytes_) {
    throw Error(fmt::format("{}: internal error: wrote {} bytes, the header promises {}",
                            path_.string(), written_bytes_, expected_bytes_));
  }
  flush();
  const uint64_t crc = kPayloadCrc | crc_;
  if (::pwrite(fd_, &crc, sizeof(crc), offsetof(ColumnHeader, reserved)) != sizeof(crc))
    throw Error(fmt::format("{}: write failed: {}", path_.string(), std::strerror(errno)));
  // Start writing back now, so that the disk works while the next columns are computed;
  // DirectoryReplacement::commit (base/directory_swap.h) waits for it before the swap.
  ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(fmt::format("{}: close failed: {}", path_.string(), std::strerror(errno)));
  }
  fd_ = -1;
}

void write_text_file(const fs::path& path, const std::string& text) { write_file_atomically(path, text); }

// ---- bounds of the index columns -----------------------------------------------------------

void release_pages(const void* begin, const void* end) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto from = (reinterpret_cast<uintptr_t>(begin) + page - 1) & ~(page - 1);
  const auto to = reinterpret_cast<uintptr_t>(end) & ~(page - 1);
  if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
}

namespace {

[[noreturn]] void damaged(const fs::path& dir, const std::string& column, size_t r,
                          const std::string& what) {
  throw Error(fmt::format("{}: element {} {}: the column is damaged (a dataset is written only by "
                          "import and delete-users; import it again)",
                          (dir / (column + ".col")).string(), r, what));
}

// Every value below `bound` (kNullContext allowed where `null_ok`).
void check_below(const fs::path& dir, const std::string& column, std::span<const uint32_t> values,
                 uint64_t bound, bool null_ok = false) {
  scan_released(values, [&](size_t r, uint32_t v) {
    if (v >= bound && !(null_ok && v == kNullContext))
      damaged(dir, column, r, fmt::format("is {}, not below {}", v, bound));
  });
}

// CSR offsets: from 0, never decreasing (the last one is checked against the values' count).
void check_offsets(const fs::path& dir, const std::string& column, std::span<const uint64_t> offsets) {
  if (!offsets.empty() && offsets[0] != 0) damaged(dir, column, 0, "is not 0");
  for (size_t r = 1; r < offsets.size(); ++r) {
    if (offsets[r] < offsets[r - 1])
      damaged(dir, column, r, fmt::format("({}) is below the one before it", offsets[r]));
  }
}

// The index columns of the interactions against the tables they index.
void check_interaction_indices(const Dataset& ds, uint64_t event_types) {
  const Interactions& in = ds.interactions;
  check_offsets(ds.dir, "interactions.user_offsets", in.user_offsets);
  check_below(ds.dir, "interactions.user", in.user, ds.num_users());
  check_below(ds.dir, "interactions.item", in.item, ds.num_items());
  check_below(ds.dir, "interactions.event_type", in.event_type, event_types);
  check_offsets(ds.dir, "interactions.impression_offsets", in.impression_offsets);
  check_below(ds.dir, "interactions.impression_items", in.impression_items, ds.num_items());
  for (size_t k = 0; k < in.context.size(); ++k) {
    check_below(ds.dir, fmt::format("interactions.context.{}.values", k), in.context[k].values,
                in.context[k].vocabulary.size(), true);
  }
}

}  // namespace

// ---- Dataset::open -------------------------------------------------------------------------

namespace {

// meta.json of `dir`, checked to be a dataset description of this build's format version.
nlohmann::json read_meta(const fs::path& dir) {
  const fs::path meta_path = dir / "meta.json";
  if (!fs::exists(meta_path)) {
    throw Error(fmt::format("{}: not a tastebud dataset (no meta.json); create one with "
                            "`tastebud import`",
                            dir.string()));
  }
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_file(meta_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", meta_path.string(), e.what()));
  }
  if (meta.value("format", "") != "tastebud-dataset") {
    throw Error(fmt::format("{}: not a tastebud dataset description", meta_path.string()));
  }
  if (meta.value("version", 0u) != kDatasetFormatVersion) {
    throw Error(fmt::format("{}: dataset format version {}; this build reads version {}",
                            meta_path.string(), meta.value("version", 0u), kDatasetFormatVersion));
  }
  return meta;
}

// Maps the column files of one dataset directory as meta.json describes them, each checked
// against its header; the mappings go to `files`, which the dataset keeps.
class ColumnMapper {
 public:
  ColumnMapper(const fs::path& dir, const nlohmann::json& meta, std::vector<std::shared_ptr<MappedFile>>& files)
      : dir_(dir), meta_(meta), files_(files) {}

  // One column file; `expected` is the element count meta.json gives, or UINT64_MAX when only
  // the file knows (variable-length payloads).
  template <typename T>
  std::span<const T> column(const std::string& name, uint64_t expected) {
    const fs::path path = dir_ / (name + ".col");
    auto file = std::make_shared<MappedFile>(path);
    if (file->size() < sizeof(ColumnHeader)) {
      throw Error(fmt::format("{}: truncated: {} bytes, shorter than the column header",
                              path.string(), file->size()));
    }
    ColumnHeader header;
    std::memcpy(&header, file->data(), sizeof(header));
    if (std::memcmp(header.magic, kColumnMagic, sizeof(kColumnMagic)) != 0) {
      throw Error(fmt::format("{}: bad magic number: not a tastebud column file", path.string()));
    }
    if (header.version != kColumnVersion) {
      throw Error(fmt::format("{}: column format version {}; this build reads version {}",
                              path.string(), header.version, kColumnVersion));
    }
    if (header.dtype != static_cast<uint32_t>(dtype_of<T>())) {
      throw Error(fmt::format("{}: element type {} where {} was expected", path.string(),
                              header.dtype, static_cast<uint32_t>(dtype_of<T>())));
    }
    if (expected != UINT64_MAX && header.count != expected) {
      throw Error(fmt::format("{}: holds {} elements where meta.json says {}", path.string(),
                              header.count, expected));
    }
    if (file->size() != sizeof(ColumnHeader) + header.count * sizeof(T)) {
      throw Error(fmt::format("{}: size {} bytes does not match its {} elements", path.string(),
                              file->size(), header.count));
    }
    const auto* data = reinterpret_cast<const T*>(file->data() + sizeof(ColumnHeader));
    files_.push_back(std::move(file));
    return std::span<const T>(data, static_cast<size_t>(header.count));
  }

  StringTable strings(const std::string& prefix, uint64_t count) {
    const auto offsets = column<uint64_t>(prefix + ".offsets", count + 1);
    check_offsets(dir_, prefix + ".offsets", offsets);
    const auto bytes = column<char>(prefix + ".bytes", offsets.back());
    return StringTable(offsets, bytes);
  }

  CategoricalField categorical(const std::string& name, const std::string& prefix, uint64_t rows) {
    CategoricalField field;
    field.name = name;
    const uint64_t vocabulary_size = meta_.at("vocabulary_sizes").at(prefix).get<uint64_t>();
    field.vocabulary = strings(prefix + ".vocabulary", vocabulary_size);
    field.offsets = column<uint64_t>(prefix + ".offsets", rows + 1);
    check_offsets(dir_, prefix + ".offsets", field.offsets);
    field.values = column<uint32_t>(prefix + ".values", field.offsets.back());
    check_below(dir_, prefix + ".values", field.values, vocabulary_size);
    return field;
  }

  void interactions(Interactions& in, uint64_t n, uint64_t num_users);
  void metadata(const char* kind, uint64_t rows, Metadata& m);

 private:
  const fs::path& dir_;
  const nlohmann::json& meta_;
  std::vector<std::shared_ptr<MappedFile>>& files_;
};

void ColumnMapper::interactions(Interactions& in, uint64_t n, uint64_t num_users) {
  const auto& im = meta_.at("interactions");
  in.user = column<uint32_t>("interactions.user", n);
  in.item = column<uint32_t>("interactions.item", n);
  in.timestamp = column<int64_t>("interactions.timestamp", n);
  in.event_type = column<uint32_t>("interactions.event_type", n);
  in.event_value = column<float>("interactions.event_value", n);
  in.user_offsets = column<uint64_t>("interactions.user_offsets", num_users + 1);
  if (im.value("impressions", false)) {
    in.impression_offsets = column<uint64_t>("interactions.impression_offsets", n + 1);
    in.impression_items = column<uint32_t>("interactions.impression_items", in.impression_offsets.back());
  }
  const auto& context = im.at("context");
  for (size_t k = 0; k < context.size(); ++k) {
    const std::string prefix = fmt::format("interactions.context.{}", k);
    ContextField field;
    field.name = context[k].get<std::string>();
    const uint64_t vocabulary_size = meta_.at("vocabulary_sizes").at(prefix).get<uint64_t>();
    field.vocabulary = strings(prefix + ".vocabulary", vocabulary_size);
    field.values = column<uint32_t>(prefix + ".values", n);
    in.context.push_back(std::move(field));
  }
  const auto& numerical = im.at("numerical");
  for (size_t k = 0; k < numerical.size(); ++k) {
    in.numerical.push_back({numerical[k].get<std::string>(),
                            column<float>(fmt::format("interactions.numerical.{}", k), n)});
  }
}

void ColumnMapper::metadata(const char* kind, uint64_t rows, Metadata& m) {
  const auto& mm = meta_.at(kind);
  m.has_row = column<uint8_t>(fmt::format("{}.has_row", kind), rows);
  const auto& cats = mm.at("categorical");
  for (size_t k = 0; k < cats.size(); ++k) {
    m.categorical.push_back(
        categorical(cats[k].get<std::string>(), fmt::format("{}.categorical.{}", kind, k), rows));
  }
  const auto& nums = mm.at("numerical");
  for (size_t k = 0; k < nums.size(); ++k) {
    m.numerical.push_back(
        {nums[k].get<std::string>(), column<float>(fmt::format("{}.numerical.{}", kind, k), rows)});
  }
  const auto& texts = mm.at("textual");
  for (size_t k = 0; k < texts.size(); ++k) {
    TextualField t;
    t.name = texts[k].get<std::string>();
    t.offsets = column<uint64_t>(fmt::format("{}.textual.{}.offsets", kind, k), rows + 1);
    check_offsets(dir_, fmt::format("{}.textual.{}.offsets", kind, k), t.offsets);
    t.tokens = column<uint32_t>(fmt::format("{}.textual.{}.tokens", kind, k), t.offsets.back());
    m.textual.push_back(std::move(t));
  }
  if (mm.value("creation_timestamp", false)) {
    m.creation_timestamp = column<int64_t>(fmt::format("{}.creation_timestamp", kind), rows);
  }
}

}  // namespace

Dataset Dataset::open(const fs::path& dir) {
  Dataset ds;
  ds.dir = dir;
  const nlohmann::json meta = read_meta(dir);
  ColumnMapper columns(dir, meta, ds.files_);
  try {
    const uint64_t num_users = meta.at("num_users").get<uint64_t>();
    const uint64_t num_items = meta.at("num_items").get<uint64_t>();
    const uint64_t num_interactions = meta.at("num_interactions").get<uint64_t>();
    ds.user_ids = columns.strings("user_ids", num_users);
    ds.item_ids = columns.strings("item_ids", num_items);
    ds.event_types = columns.strings("event_types", meta.at("num_event_types").get<uint64_t>());
    columns.interactions(ds.interactions, num_interactions, num_users);
    columns.metadata("users", num_users, ds.users);
    columns.metadata("items", num_items, ds.items);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: incomplete dataset description: {}", (dir / "meta.json").string(), e.what()));
  }

  check_interaction_indices(ds, ds.event_types.size());
  if (ds.interactions.user_offsets.back() != ds.interactions.size()) {
    throw Error(fmt::format("{}: interactions.user_offsets ends at {}, not at the {} interactions",
                            dir.string(), ds.interactions.user_offsets.back(),
                            ds.interactions.size()));
  }
  for (auto [schema, name] : {std::pair{&ds.interactions_schema, "interactions"},
                              std::pair{&ds.users_schema, "users"},
                              std::pair{&ds.items_schema, "items"}}) {
    const fs::path path = dir / "schema" / (std::string(name) + ".json");
    if (fs::exists(path)) *schema = read_file(path);
  }
  return ds;
}

void verify_columns(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".col") continue;
    const MappedFile file(entry.path());
    ColumnHeader header{};
    if (file.size() < sizeof(header)) continue;  // Dataset::open names it
    std::memcpy(&header, file.data(), sizeof(header));
    if ((header.reserved & kPayloadCrc) == 0) continue;  // written before columns had one
    const std::span<const char> payload(reinterpret_cast<const char*>(file.data()) + sizeof(header),
                                        file.size() - sizeof(header));
    uint32_t crc = 0;
    constexpr size_t kPiece = size_t{1} << 20;
    for (size_t at = 0; at < payload.size(); at += kPiece) {
      const std::span<const char> piece = payload.subspan(at, std::min(kPiece, payload.size() - at));
      crc = crc32_update(crc, std::string_view(piece.data(), piece.size()));
      release_pages(piece.data(), piece.data() + piece.size());
    }
    if (crc != static_cast<uint32_t>(header.reserved)) {
      throw Error(fmt::format("corrupt: {}: its elements' CRC-32 is {:08x}, the header records {:08x}; "
                              "import the dataset again",
                              entry.path().string(), crc, static_cast<uint32_t>(header.reserved)));
    }
  }
}

}  // namespace tastebud::datasets
