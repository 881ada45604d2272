#include "tastebud/datasets/delete_users.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "tastebud/atomic_file.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/datasets/csv.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kAuditLog = "deletions.jsonl";

size_t element_size(uint32_t dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::U8:
    case DType::Char:
      return 1;
    case DType::U32:
    case DType::F32:
      return 4;
    case DType::U64:
    case DType::I64:
      return 8;
  }
  return 0;
}

// One column file, mapped: its header and its elements as bytes.
struct Column {
  MappedFile file;
  ColumnHeader header{};
  size_t element = 0;

  explicit Column(const fs::path& path) : file(path) {
    TB_CHECK(file.size() >= sizeof(ColumnHeader),
             fmt::format("{}: too short for a column file", path.string()));
    std::memcpy(&header, file.data(), sizeof(header));
    element = element_size(header.dtype);
    TB_CHECK(std::memcmp(header.magic, kColumnMagic, sizeof(kColumnMagic)) == 0 && element > 0 &&
                 file.size() == sizeof(ColumnHeader) + header.count * element,
             fmt::format("{}: not a column file this build reads", path.string()));
  }
  uint64_t count() const { return header.count; }
  const std::byte* at(uint64_t i) const { return file.data() + sizeof(ColumnHeader) + i * element; }
  uint64_t u64(uint64_t i) const {
    uint64_t v;
    std::memcpy(&v, at(i), 8);
    return v;
  }
};

// The elements of `in` whose row is kept.
void write_kept(const fs::path& path, const Column& in, const std::vector<uint8_t>& keep,
                uint64_t kept) {
  ColumnWriter out(path, static_cast<DType>(in.header.dtype), in.element, kept);
  for (uint64_t r = 0; r < in.count(); ++r) {
    if (keep[r]) out.append(in.at(r), in.element);
  }
  out.finish();
}

// A CSR list (offsets rows + 1, values) without the rows that go: new offsets, the kept slices.
void write_kept_lists(const fs::path& offsets_path, const fs::path& values_path,
                      const Column& offsets, const Column& values, const std::vector<uint8_t>& keep,
                      uint64_t kept) {
  TB_CHECK(offsets.count() == keep.size() + 1,
           fmt::format("{}: {} offsets for {} rows", offsets_path.string(), offsets.count(),
                       keep.size()));
  std::vector<uint64_t> new_offsets{0};
  new_offsets.reserve(kept + 1);
  ColumnWriter out_values(values_path, static_cast<DType>(values.header.dtype), values.element,
                          [&] {
                            uint64_t total = 0;
                            for (size_t r = 0; r < keep.size(); ++r) {
                              if (keep[r]) total += offsets.u64(r + 1) - offsets.u64(r);
                            }
                            return total;
                          }());
  for (size_t r = 0; r < keep.size(); ++r) {
    if (!keep[r]) continue;
    const uint64_t begin = offsets.u64(r), end = offsets.u64(r + 1);
    TB_CHECK(begin <= end && end <= values.count(),
             fmt::format("{}: row {} is out of range", offsets_path.string(), r));
    out_values.append(values.at(begin), (end - begin) * values.element);
    new_offsets.push_back(new_offsets.back() + end - begin);
  }
  out_values.finish();
  write_column<uint64_t>(offsets_path, new_offsets);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What a deletion keeps: users, their new indices, and the interaction rows.
struct Kept {
  std::vector<uint8_t> users, rows;
  std::vector<uint32_t> new_index;
  uint32_t users_left = 0;
  uint64_t rows_left = 0;
};

Kept kept_of(const Dataset& dataset, const std::unordered_set<std::string>& gone) {
  Kept k;
  k.users.assign(dataset.num_users(), 1);
  k.new_index.assign(dataset.num_users(), UINT32_MAX);
  for (uint32_t u = 0; u < dataset.num_users(); ++u) {
    k.users[u] = !gone.contains(std::string(dataset.user_ids[u]));
    if (k.users[u]) k.new_index[u] = k.users_left++;
  }
  const Interactions& in = dataset.interactions;
  k.rows.resize(in.size());
  for (size_t r = 0; r < in.size(); ++r) k.rows_left += (k.rows[r] = k.users[in.user[r]]);
  return k;
}

// The sibling of a CSR offsets column that holds its values ("P.offsets.col" -> "P.values.col",
// "P.tokens.col" or "P.bytes.col"; the impression lists' own names).
fs::path values_of(const fs::path& dir, const std::string& offsets_name) {
  if (offsets_name == "interactions.impression_offsets.col")
    return dir / "interactions.impression_items.col";
  const std::string stem = offsets_name.substr(0, offsets_name.size() - std::strlen("offsets.col"));
  for (const char* suffix : {"values.col", "tokens.col", "bytes.col"}) {
    if (fs::exists(dir / (stem + suffix))) return dir / (stem + suffix);
  }
  throw Error(fmt::format("{}: no values column beside this offsets column",
                          (dir / offsets_name).string()));
}

// The columns whose elements belong to users (their ids, their metadata rows) or to
// interactions; everything else (items, event types, vocabularies) holds no user and is copied.
bool user_side(const std::string& name) {
  return name.starts_with("users.") || name.starts_with("user_ids.");
}
bool row_side(const std::string& name) { return name.starts_with("interactions."); }
bool copied_whole(const std::string& name) {
  return (!user_side(name) && !row_side(name)) || name.find(".vocabulary.") != std::string::npos;
}

// A CSR offsets column of users or interactions, rewritten together with its values.
bool is_offsets(const std::string& name) {
  if (copied_whole(name)) return false;
  return name == "interactions.impression_offsets.col" ||
         (ends_with(name, ".offsets.col") && name != "interactions.user_offsets.col");
}

// Writes one column of the dataset into `to` without the deleted users (a CSR list's values
// with its offsets).
void rewrite_column(const Dataset& dataset, const Kept& kept, const fs::path& to,
                    const std::string& name) {
  const fs::path& from = dataset.dir;
  if (copied_whole(name)) {
    fs::copy_file(from / name, to / name);
    return;
  }
  const bool per_user = user_side(name);
  const std::vector<uint8_t>& keep = per_user ? kept.users : kept.rows;
  const uint64_t left = per_user ? kept.users_left : kept.rows_left;
  if (name == "interactions.user.col") {
    std::vector<uint32_t> users;
    users.reserve(kept.rows_left);
    for (size_t r = 0; r < keep.size(); ++r) {
      if (keep[r]) users.push_back(kept.new_index[dataset.interactions.user[r]]);
    }
    write_column<uint32_t>(to / name, users);
  } else if (name == "interactions.user_offsets.col") {
    std::vector<uint64_t> offsets{0};
    const auto& old = dataset.interactions.user_offsets;
    for (uint32_t u = 0; u < kept.users.size(); ++u) {
      if (kept.users[u]) offsets.push_back(offsets.back() + old[u + 1] - old[u]);
    }
    write_column<uint64_t>(to / name, offsets);
  } else if (is_offsets(name)) {
    const fs::path values = values_of(from, name);
    write_kept_lists(to / name, to / values.filename(), Column(from / name), Column(values), keep,
                     left);
  } else {
    const Column in(from / name);
    TB_CHECK(in.count() == keep.size(),
             fmt::format("{}: {} elements, not one per {} ({}): a column delete-users does not "
                         "know how to rewrite",
                         (from / name).string(), in.count(), per_user ? "user" : "interaction",
                         keep.size()));
    write_kept(to / name, in, keep, left);
  }
}

bool written_with_offsets(const fs::path& dir, const std::string& name) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string other = entry.path().filename().string();
    if (is_offsets(other) && values_of(dir, other).filename() == name) return true;
  }
  return false;
}

json audit_line(const Dataset& dataset, const DeleteUsersReport& report) {
  const std::time_t now = std::time(nullptr);
  char utc[32];
  std::strftime(utc, sizeof(utc), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return json{{"time", utc},
              {"dataset", fs::absolute(dataset.dir).lexically_normal().string()},
              {"users_requested", report.requested},
              {"users_deleted", report.users_deleted},
              {"interactions_deleted", report.interactions_deleted},
              {"users_left", report.users_left},
              {"interactions_left", report.interactions_left}};
}

}  // namespace

std::vector<std::string> read_user_id_list(const fs::path& path) {
  TB_CHECK(fs::is_regular_file(path), fmt::format("{}: no such file", path.string()));
  CsvReader reader(path);
  CsvRecord record;
  TB_CHECK(reader.next(record),
           fmt::format("{}:1: empty file; expected a header with USER_ID", path.string()));
  size_t column = record.fields.size();
  for (size_t k = 0; k < record.fields.size(); ++k) {
    std::string name(record.fields[k]);
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (name != "USER_ID") continue;
    TB_CHECK(column == record.fields.size(),
             fmt::format("{}:{}: field {} (USER_ID): the column appears twice in the header",
                         path.string(), record.line, k + 1));
    column = k;
  }
  TB_CHECK(column < record.fields.size(),
           fmt::format("{}:{}: the header has no USER_ID column", path.string(), record.line));
  std::vector<std::string> ids;
  std::unordered_set<std::string> seen;
  while (reader.next(record)) {
    TB_CHECK(
        column < record.fields.size() && !record.fields[column].empty(),
        fmt::format("{}:{}: field {} (USER_ID) is empty", path.string(), record.line, column + 1));
    std::string id(record.fields[column]);
    if (seen.insert(id).second) ids.push_back(std::move(id));
  }
  return ids;
}

void carry_over_dataset_files(const fs::path& from, const fs::path& to) {
  if (fs::exists(from / kAuditLog))
    fs::copy_file(from / kAuditLog, to / kAuditLog, fs::copy_options::overwrite_existing);
}

void check_only_dataset_entries(const fs::path& dir, std::string_view job) {
  if (!fs::is_directory(dir)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool ours = (ends_with(name, ".col") && entry.is_regular_file()) || name == "meta.json" ||
                      name == kAuditLog || (name == "schema" && entry.is_directory()) ||
                      (name.front() == '.' && (ends_with(name, ".lock") || temporary_owner(name) != 0));
    if (!ours) {
      throw Error(fmt::format("{}: holds {}, which is not part of the dataset; {} replaces the whole "
                              "directory and would remove it: move it out of the dataset directory",
                              dir.string(), name, job));
    }
  }
}

void check_outside_dataset(const fs::path& path, const fs::path& dataset, std::string_view name) {
  const fs::path inner = fs::weakly_canonical(fs::absolute(path));
  const fs::path outer = fs::weakly_canonical(fs::absolute(dataset));
  const auto [end, at] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
  if (end == outer.end()) {
    throw Error(fmt::format("`{}` {}: is inside the dataset directory {}, which every import replaces; "
                            "put it beside the dataset",
                            name, path.string(), dataset.string()));
  }
}

DeleteUsersReport delete_users(const fs::path& dir_in, const std::vector<std::string>& user_ids) {
  const fs::path dir = fs::absolute(dir_in).lexically_normal();
  TB_CHECK(fs::exists(dir / "meta.json"),
           fmt::format("{}: not a tastebud dataset (no meta.json)", dir.string()));
  const DirectoryLock lock(dir, "this deletion");
  check_only_dataset_entries(dir, "a deletion");
  DeleteUsersReport report;
  const std::unordered_set<std::string> gone(user_ids.begin(), user_ids.end());
  report.requested = gone.size();
  DirectoryReplacement replacement(dir);  // first cleans what killed deletions left
  const fs::path& temp = replacement.path();
  {
    const Dataset dataset = Dataset::open(dir);
    const Kept kept = kept_of(dataset, gone);
    report.users_left = kept.users_left;
    report.interactions_left = kept.rows_left;
    report.users_deleted = dataset.num_users() - kept.users_left;
    report.interactions_deleted = dataset.interactions.size() - kept.rows_left;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory()) {
        fs::copy(entry.path(), temp / name, fs::copy_options::recursive);  // schema/
      } else if (ends_with(name, ".col")) {
        if (!written_with_offsets(dir, name)) rewrite_column(dataset, kept, temp, name);
      } else if (name != "meta.json" && name != kAuditLog) {
        fs::copy_file(entry.path(), temp / name);
      }
    }
    json meta = json::parse(read_file(dir / "meta.json"));
    meta["num_users"] = kept.users_left;
    meta["num_interactions"] = kept.rows_left;
    write_text_file(temp / "meta.json", meta.dump(2) + "\n");
    std::string audit = fs::exists(dir / kAuditLog) ? read_file(dir / kAuditLog) : std::string();
    audit += audit_line(dataset, report).dump() + "\n";
    write_text_file(temp / kAuditLog, audit);
    Dataset::open(temp);  // the rewritten dataset must read back before it replaces the old one
  }
  replacement.commit();  // after the old dataset is unmapped
  return report;
}

}  // namespace tastebud::datasets
