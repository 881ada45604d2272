// import_dataset: the orchestration of an import. Each stage has a file of its own: the CSV
// inputs (import_input), the users' and items' metadata (import_metadata), the interactions'
// parse, sort and merge (import_interactions); the finished directory is swapped in by
// base/directory_swap.h.
#include "tastebud/datasets/import.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "import_input.h"
#include "import_interactions.h"
#include "import_metadata.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/datasets/dataset.h"
#include "tastebud/datasets/delete_users.h"
#include "tastebud/datasets/input_files.h"
#include "tastebud/datasets/schema.h"
#include "tastebud/directory_lock.h"
#include "tastebud/directory_swap.h"
#include "tastebud/error.h"
#include "tastebud/read_file.h"

namespace tastebud::datasets {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

using namespace import_detail;

namespace {

// ---- the directory -------------------------------------------------------------------------

// Parent directories created for `out`, removed again when the import fails.
class CreatedParents {
 public:
  explicit CreatedParents(const fs::path& dir) {
    fs::path p = dir;
    while (!p.empty() && !fs::exists(p)) {
      created_.push_back(p);
      p = p.parent_path();
    }
    if (!created_.empty()) fs::create_directories(dir);
  }
  ~CreatedParents() {
    if (kept_) return;
    std::error_code ignored;
    for (const fs::path& p : created_) fs::remove(p, ignored);  // innermost first; only if empty
  }
  void keep() { kept_ = true; }

 private:
  std::vector<fs::path> created_;
  bool kept_ = false;
};

bool is_dataset_dir(const fs::path& dir) { return fs::exists(dir / "meta.json"); }

struct SchemaChoice {
  std::optional<Schema> schema;
  std::string source;  // the file it came from, or "inferred"
};

bool same_fields(const Schema& a, const Schema& b) {
  if (a.fields.size() != b.fields.size()) return false;
  std::unordered_map<std::string, const SchemaField*> by_name;
  for (const SchemaField& g : b.fields) by_name.emplace(field_name_key(g.name), &g);
  for (const SchemaField& f : a.fields) {
    const auto found = by_name.find(field_name_key(f.name));
    const SchemaField* g = found == by_name.end() ? nullptr : found->second;
    if (g == nullptr || g->type != f.type || g->nullable != f.nullable ||
        g->categorical != f.categorical || g->textual != f.textual) {
      return false;
    }
  }
  return true;
}

SchemaChoice choose_schema(DatasetKind kind, const ImportOptions& options, const Dataset* existing) {
  SchemaChoice choice;
  std::optional<Schema> stored;
  std::string stored_source;
  if (existing != nullptr) {
    const std::string& text = kind == DatasetKind::Interactions ? existing->interactions_schema
                              : kind == DatasetKind::Users      ? existing->users_schema
                                                                : existing->items_schema;
    if (!text.empty()) {
      stored_source = (existing->dir / "schema" / (std::string(kind_name(kind)) + ".json")).string();
      stored = parse_schema(text, kind, stored_source);
    }
  }
  if (!options.schema_dir.empty()) {
    const fs::path path = options.schema_dir / (std::string(kind_name(kind)) + ".json");
    if (fs::exists(path)) {
      choice.schema = parse_schema(read_file(path), kind, path.string());
      choice.source = path.string();
      if (stored && !same_fields(*stored, *choice.schema)) {
        throw Error(fmt::format("{}: differs from the dataset's schema {}; an incremental import "
                                "keeps the schema, a full import (`mode=full` `overwrite`) changes it",
                                path.string(), stored_source));
      }
      return choice;
    }
  }
  if (stored) {
    choice.schema = std::move(stored);
    choice.source = stored_source;
  }
  return choice;
}

// Opens a CSV and settles its schema: the chosen one, or one inferred from its header and first
// rows (then checked like a given one).
std::unique_ptr<CsvInput> open_csv(const std::vector<fs::path>& parts, DatasetKind kind,
                                   SchemaChoice& choice, size_t block_size) {
  auto in = std::make_unique<CsvInput>(parts, kind, block_size,
                                       choice.schema ? 1 : kInferenceSampleRows);
  check_required_columns(*in, kind);
  if (!choice.schema) {
    choice.schema = infer_schema(kind, in->header(), in->sample());
    choice.source = fmt::format("inferred from {}", parts.front().string());
    check_schema(*choice.schema, kind, choice.source);
  }
  return in;
}

// The three inputs, in this order everywhere below.
constexpr DatasetKind kKinds[3] = {DatasetKind::Interactions, DatasetKind::Users, DatasetKind::Items};

// The dataset directory as named: a trailing slash dropped, "." and ".." made absolute, a bare
// name taken relative to the working directory.
fs::path dataset_directory(const ImportOptions& options) {
  fs::path out = options.out.lexically_normal();
  if (out.empty()) throw Error("import: no output directory given (`out`)");
  if (!out.has_filename()) out = out.parent_path();
  if (out.filename() == "." || out.filename() == "..") out = fs::absolute(out).lexically_normal();
  if (out.parent_path().empty()) out = fs::path(".") / out;
  return out;
}

// The input files of each kind (a directory or glob expanded to its parts), checked before the
// dataset is opened.
std::array<std::vector<fs::path>, 3> input_parts(const ImportOptions& options) {
  if (options.mode == ImportMode::Full && options.interactions.empty()) {
    throw Error("import: a full import needs the interactions file (`interactions`)");
  }
  std::array<std::vector<fs::path>, 3> parts;
  for (int k = 0; k < 3; ++k) {
    const fs::path& p = k == 0 ? options.interactions : k == 1 ? options.users : options.items;
    if (!p.empty()) parts[k] = expand_input(p);
  }
  if (!options.schema_dir.empty() && !fs::is_directory(options.schema_dir)) {
    throw Error(fmt::format("{}: the schema directory does not exist", options.schema_dir.string()));
  }
  return parts;
}

// The dataset an incremental import adds to; for a full import, a check that `out` may be
// replaced (only with `overwrite`, and only an empty directory or a dataset).
std::optional<Dataset> existing_dataset(const fs::path& out, const ImportOptions& options) {
  if (options.mode == ImportMode::Incremental) {
    if (!fs::exists(out)) {
      throw Error(fmt::format("{}: no dataset to add to; create it with a full import first "
                              "(`mode=full`)",
                              out.string()));
    }
    return Dataset::open(out);
  }
  if (fs::exists(out)) {
    if (!options.overwrite) {
      throw Error(fmt::format("{}: already exists; pass `overwrite` to replace it, or "
                              "`mode=incremental` to add to it",
                              out.string()));
    }
    const bool empty_dir = fs::is_directory(out) && fs::is_empty(out);
    if (!empty_dir && !is_dataset_dir(out)) {
      throw Error(fmt::format("{}: exists and is not a tastebud dataset; refusing to replace it",
                              out.string()));
    }
  }
  return std::nullopt;
}

// What the import reads: each kind's schema and CSV, opened before any long read so that header
// problems surface first (users, then items, then interactions).
struct Inputs {
  SchemaChoice schemas[3];
  std::unique_ptr<CsvInput> csv[3];

  Inputs(const std::array<std::vector<fs::path>, 3>& parts, const ImportOptions& options, const Dataset* old) {
    for (int k = 0; k < 3; ++k) schemas[k] = choose_schema(kKinds[k], options, old);
    for (int k : {1, 2, 0})
      if (!parts[k].empty()) csv[k] = open_csv(parts[k], kKinds[k], schemas[k], options.block_size);
  }
  const Schema& schema_or_none(int k) const {
    static const Schema no_fields;
    return schemas[k].schema ? *schemas[k].schema : no_fields;
  }
};

// The ids an import encodes: the existing dataset's first, then new ones as rows arrive.
struct Vocabularies {
  IdMap users, items, event_types;
  explicit Vocabularies(const Dataset* old)
      : users(old ? IdMap(old->user_ids) : IdMap()),
        items(old ? IdMap(old->item_ids) : IdMap()),
        event_types(old ? IdMap(old->event_types) : IdMap()) {}
};

// Reads users, items and interactions into the builders, after the existing dataset's rows.
void read_inputs(Inputs& inputs, const Dataset* old, const ImportOptions& options, MetadataBuilder& user_metadata,
                 MetadataBuilder& item_metadata, InteractionsBuilder& interactions, Vocabularies& ids,
                 BadRowBudget& budget, ImportReport& report) {
  if (old) {
    user_metadata.load_existing(old->users, old->num_users());
    item_metadata.load_existing(old->items, old->num_items());
    interactions.load_existing(old->interactions);
  }
  if (inputs.csv[1]) user_metadata.read(*inputs.csv[1], *inputs.schemas[1].schema, inputs.schemas[1].source, ids.users, budget);
  if (inputs.csv[2]) item_metadata.read(*inputs.csv[2], *inputs.schemas[2].schema, inputs.schemas[2].source, ids.items, budget);
  if (CsvInput* in = inputs.csv[0].get()) {
    const uint64_t total = in->bytes_total();
    if (options.on_progress) {
      interactions.on_progress = [&options, total](uint64_t bytes) { options.on_progress(bytes, total); };  // total by value: it ends with this block
    }
    interactions.read(*in, *inputs.schemas[0].schema, inputs.schemas[0].source, ids.users, ids.items,
                      ids.event_types, budget);
    report.interactions_bytes = total;
    if (interactions.rows_read() == 0) {
      throw Error(fmt::format("{}: no usable rows: every data row was bad and skipped",
                              options.interactions.string()));
    }
  }
  if (ids.event_types.size() == 0) ids.event_types.insert("");
}

// meta.json's "imports": the existing dataset's history and this import.
Json import_history(const Dataset* old, const ImportOptions& options, const ImportReport& report) {
  Json history = Json::array();
  if (old) {
    try {
      std::ifstream in(old->dir / "meta.json");
      const Json previous = Json::parse(in);
      if (previous.contains("imports")) history = previous["imports"];
    } catch (const Json::exception&) {
      // The history is informative only; Dataset::open already accepted the dataset.
    }
  }
  history.push_back({{"mode", options.mode == ImportMode::Incremental ? "incremental" : "full"},
                     {"time", static_cast<int64_t>(std::time(nullptr))},
                     {"interactions", options.interactions.string()},
                     {"users", options.users.string()},
                     {"items", options.items.string()},
                     {"rows_read", report.rows_read},
                     {"bad_rows_skipped", report.bad_rows_skipped},
                     {"duplicates", report.duplicates}});
  return history;
}

// Writes the columns, the vocabularies, the schemas and meta.json into `dir`, the dataset being
// built; the sort's runs in `spill_dir` are gone when it returns.
void write_dataset(const fs::path& dir, const fs::path& spill_dir, const Inputs& inputs, const Dataset* old,
                   const ImportOptions& options, MetadataBuilder& user_metadata, MetadataBuilder& item_metadata,
                   InteractionsBuilder& interactions, const Vocabularies& ids, ImportReport& report) {
  fs::create_directory(dir / "schema");
  Json meta;
  meta["format"] = "tastebud-dataset";
  meta["version"] = kDatasetFormatVersion;
  meta["num_users"] = ids.users.size();
  meta["num_items"] = ids.items.size();
  Json vocabulary_sizes = Json::object();
  Json interactions_meta, users_meta, items_meta;
  interactions.write(dir, ids.users.size(), interactions_meta, vocabulary_sizes, report);
  fs::remove_all(spill_dir);
  meta["num_interactions"] = report.interactions;
  meta["num_event_types"] = ids.event_types.size();
  user_metadata.write(dir, ids.users.size(), users_meta, vocabulary_sizes);
  item_metadata.write(dir, ids.items.size(), items_meta, vocabulary_sizes);
  write_strings(dir, "user_ids", ids.users);
  write_strings(dir, "item_ids", ids.items);
  write_strings(dir, "event_types", ids.event_types);
  meta["vocabulary_sizes"] = vocabulary_sizes;
  meta["interactions"] = interactions_meta;
  meta["users"] = users_meta;
  meta["items"] = items_meta;
  meta["imports"] = import_history(old, options, report);
  for (int k = 0; k < 3; ++k) {
    if (!inputs.schemas[k].schema) continue;
    write_text_file(dir / "schema" / (std::string(kind_name(kKinds[k])) + ".json"),
                    schema_to_json(*inputs.schemas[k].schema));
  }
  write_text_file(dir / "meta.json", meta.dump(2) + "\n");
  if (old) carry_over_dataset_files(old->dir, dir);  // the deletion audit log (delete_users.h)
}

}  // namespace

uint64_t default_import_memory_limit() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return uint64_t{1} << 30;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 4;
}

ImportReport import_dataset(const ImportOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  ImportReport report;
  const fs::path out = dataset_directory(options);
  const bool incremental = options.mode == ImportMode::Incremental;
  // One writer per dataset: without the lock, two incremental imports both read the old dataset
  // and the second rename drops the first one's rows.
  CreatedParents parents(out.parent_path());
  const DirectoryLock lock(out, incremental ? "this incremental import" : "this import");
  if (incremental || (options.overwrite && is_dataset_dir(out))) check_only_dataset_entries(out, "an import");
  const std::array<std::vector<fs::path>, 3> parts = input_parts(options);
  report.memory_limit = options.memory_limit > 0 ? options.memory_limit : default_import_memory_limit();
  std::optional<Dataset> existing = existing_dataset(out, options);
  const Dataset* old = existing ? &*existing : nullptr;
  Inputs inputs(parts, options, old);
  BadRowBudget budget(options);
  Vocabularies ids(old);
  const uint32_t old_users = ids.users.size(), old_items = ids.items.size();

  // The dataset is built beside `out` (what killed imports left there goes first); the sort's
  // runs spill into it and are gone before it is swapped in.
  DirectoryReplacement replacement(out);
  const fs::path& dir = replacement.path();
  const fs::path spill_dir = dir / "spill";
  fs::create_directory(spill_dir);
  MetadataBuilder user_metadata(DatasetKind::Users, inputs.schema_or_none(1));
  MetadataBuilder item_metadata(DatasetKind::Items, inputs.schema_or_none(2));
  InteractionsBuilder interactions(inputs.schema_or_none(0), report.memory_limit / 2, spill_dir);
  read_inputs(inputs, old, options, user_metadata, item_metadata, interactions, ids, budget, report);
  report.read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  report.rows_read = interactions.rows_read();
  report.bad_rows_skipped = budget.skipped();
  report.users = ids.users.size();
  report.items = ids.items.size();
  report.new_users = ids.users.size() - old_users;
  report.new_items = ids.items.size() - old_items;
  write_dataset(dir, spill_dir, inputs, old, options, user_metadata, item_metadata, interactions, ids, report);
  existing.reset();  // unmap the old columns before their directory goes
  replacement.commit();
  parents.keep();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  report.write_seconds = report.seconds - report.read_seconds - report.sort_seconds;
  return report;
}

}  // namespace tastebud::datasets
