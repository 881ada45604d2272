#include "import_interactions.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "merged_columns.h"
#include "tastebud/datasets/columns.h"
#include "tastebud/error.h"

namespace tastebud::datasets::import_detail {

namespace fs = std::filesystem;

namespace {

// Rows of the interactions CSV as the parser thread hands them over: fields checked and parsed,
// item ids hashed, the ids still to be looked up copied out of the reader's block.
struct ParsedRows {
  size_t count = 0;  // good rows
  std::vector<IdKey> item_keys;
  // (row in the batch, key) of each row whose user differs from the previous good row's: the
  // encoder looks up only these, and fetches their slots a few changes ahead.
  std::vector<std::pair<uint32_t, IdKey>> user_changes;
  std::vector<int64_t> timestamps;
  std::vector<uint32_t> event_types;
  // Each good row's sort payload: its event value, context values and numbers (see float_bits).
  std::vector<uint32_t> payload;
  // Each good row's strings back to back (user, item, impression);
  // ends[row * strings_per_row + j] is where string j of the row ends.
  std::vector<char> text;  // its first text_size bytes are used; it only grows
  size_t text_size = 0;
  std::vector<uint32_t> ends;
  std::vector<std::pair<size_t, std::string>> bad_rows;  // (good rows before it, message)
  std::exception_ptr failure;  // a fatal error after the rows above
  bool last = false;
  uint64_t bytes_consumed = 0;  // of the file, after these rows (for progress)

  void clear() {
    count = 0;
    item_keys.clear();
    user_changes.clear();
    timestamps.clear();
    event_types.clear();
    payload.clear();
    text_size = 0;
    ends.clear();
    bad_rows.clear();
    failure = nullptr;
    last = false;
  }
};

// Batches go round between the two threads: free -> parser -> full -> encoder -> free.
class BatchQueue {
 public:
  static constexpr size_t kBatches = 3;
  BatchQueue() {
    for (auto& b : batches_) free_.push_back(&b);
  }
  // nullptr once cancelled.
  ParsedRows* take_free() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return cancelled_ || !free_.empty(); });
    if (cancelled_) return nullptr;
    ParsedRows* b = free_.front();
    free_.pop_front();
    return b;
  }
  void put_full(ParsedRows* b) {
    {
      std::lock_guard lock(mutex_);
      full_.push_back(b);
    }
    changed_.notify_all();
  }
  ParsedRows* take_full() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !full_.empty(); });
    ParsedRows* b = full_.front();
    full_.pop_front();
    return b;
  }
  void put_free(ParsedRows* b) {
    {
      std::lock_guard lock(mutex_);
      free_.push_back(b);
    }
    changed_.notify_all();
  }
  void cancel() {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  ParsedRows batches_[kBatches];
  std::deque<ParsedRows*> free_, full_;
  bool cancelled_ = false;
};

// Where the interaction fields are in a row.
struct Columns {
  int user = -1, item = -1, timestamp = -1, event = -1, value = -1, impression = -1;
  const SchemaField* timestamp_field = nullptr;
  const SchemaField* value_field = nullptr;
  std::vector<int> context, numerical;  // column of each context / numerical field, -1: absent
  const std::vector<const SchemaField*>* fields = nullptr;
  size_t strings_per_row = 2;
  // The parser owns the small vocabularies of event types and context values; nobody else
  // touches them until it is done.
  IdMap* event_types = nullptr;
  uint32_t no_event_type = 0;  // when there is no EVENT_TYPE column
  std::vector<IdMap*> context_vocabularies;
};

// The words an interaction carries through the sort besides its key: the event value, then one
// per context field, then one per numerical field (floats as their bits).
inline uint32_t float_bits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, 4);
  return w;
}
inline float bits_float(uint32_t w) {
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

// Eight ASCII digits (first digit in the lowest byte) to their value; false if any is not a digit.
inline bool parse_eight_digits(uint64_t chunk, uint64_t* value) {
  const uint64_t high_nibbles = chunk & 0xF0F0F0F0F0F0F0F0ull;
  const uint64_t over_nine = (chunk + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull;
  if (high_nibbles != 0x3030303030303030ull || over_nine != 0x3030303030303030ull) return false;
  chunk = (chunk & 0x0F0F0F0F0F0F0F0Full) * 2561 >> 8;
  chunk = (chunk & 0x00FF00FF00FF00FFull) * 6553601 >> 16;
  *value = (chunk & 0x0000FFFF0000FFFFull) * 42949672960001ull >> 32;
  return true;
}

// memcpy for the short strings of a row (ids, names) without a call: overlapping word copies
// that stay inside [src, src + n) and [dst, dst + n).
inline void copy_short(char* dst, const char* src, size_t n) {
  if (n >= 8 && n <= 16) {
    const uint64_t head = load_u64(src), tail = load_u64(src + n - 8);
    std::memcpy(dst, &head, 8);
    std::memcpy(dst + n - 8, &tail, 8);
  } else if (n >= 4 && n < 8) {
    uint32_t head, tail;
    std::memcpy(&head, src, 4);
    std::memcpy(&tail, src + n - 4, 4);
    std::memcpy(dst, &head, 4);
    std::memcpy(dst + n - 4, &tail, 4);
  } else if (n < 4) {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  } else {
    std::memcpy(dst, src, n);
  }
}

// a == b for short strings without a call: overlapping word compares inside both strings.
inline bool same_bytes(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  if (n != b.size()) return false;
  const char* p = a.data();
  const char* q = b.data();
  if (n >= 8 && n <= 16) return load_u64(p) == load_u64(q) && load_u64(p + n - 8) == load_u64(q + n - 8);
  if (n >= 4 && n < 8) return load_u32(p) == load_u32(q) && load_u32(p + n - 4) == load_u32(q + n - 4);
  if (n < 4) {
    for (size_t i = 0; i < n; ++i)
      if (p[i] != q[i]) return false;
    return true;
  }
  return std::memcmp(p, q, n) == 0;
}

// Unix seconds written as plain digits (the common case); anything else goes the strict way.
inline bool parse_plain_timestamp(std::string_view text, int64_t* value) {
  const size_t n = text.size();
  if (n >= 8 && n <= 16) {
    // Two eight-digit chunks, the first padded with leading zeros; loads stay inside the text.
    uint64_t low = 0, high = 0;
    uint64_t head = load_u64(text.data());
    const unsigned shift = static_cast<unsigned>(8 * (16 - n));
    head = shift == 64 ? 0x3030303030303030ull
                       : (head << shift) | (0x3030303030303030ull & ((uint64_t{1} << shift) - 1));
    if (!parse_eight_digits(load_u64(text.data() + n - 8), &low) ||
        !parse_eight_digits(head, &high)) {
      return false;
    }
    *value = static_cast<int64_t>(high * 100000000ull + low);
    return true;
  }
  if (text.empty() || text.size() > 18) return false;
  int64_t v = 0;
  for (char c : text) {
    const auto d = static_cast<uint8_t>(c - '0');
    if (d > 9) return false;
    v = v * 10 + d;
  }
  *value = v;
  return true;
}

// The parser thread: reads rows until the file ends, a fatal error, or cancel.
void parse_rows(CsvInput& in, const Columns& cols, BatchQueue& queue) {
  constexpr size_t kBatchRows = 16384;
  const size_t S = cols.strings_per_row;
  const size_t num_numerical = cols.numerical.size();
  CsvRecord record;
  std::vector<float> numbers(num_numerical);
  std::vector<std::string_view> strings(S);
  // Event types and context values repeat a handful of names: skip the hash for a repeat.
  std::string_view last_event_name;
  uint32_t last_event = 0;
  bool have_last_event = false;
  const size_t num_context = cols.context.size();
  std::vector<std::string> last_context_text(num_context);
  std::vector<uint32_t> last_context(num_context, kNull);
  std::string previous_user;
  bool have_previous_user = false;
  for (;;) {
    ParsedRows* b = queue.take_free();
    if (b == nullptr) return;
    b->clear();
    try {
      while (b->count < kBatchRows && b->bad_rows.size() < kBatchRows) {
        try {
          if (!in.next(record)) {
            b->last = true;
            break;
          }
          in.check_field_count(record);
          const std::string_view user = record.fields[cols.user];
          const std::string_view item = record.fields[cols.item];
          if (user.empty()) {
            throw BadRow(fmt::format("{}: empty id; every interaction needs a user",
                                     in.where(record.line, cols.user)));
          }
          if (item.empty()) {
            throw BadRow(fmt::format("{}: empty id; every interaction needs an item",
                                     in.where(record.line, cols.item)));
          }
          int64_t timestamp;
          if (!parse_plain_timestamp(record.fields[cols.timestamp], &timestamp) &&
              !parse_int64(record.fields[cols.timestamp], &timestamp)) {
            timestamp = parse_timestamp_field(in, record, cols.timestamp, *cols.timestamp_field);
          }
          if (timestamp < 0 || timestamp > kMaxTimestamp) check_timestamp(in, record, cols.timestamp, timestamp);
          float value = kNullNumber;
          if (cols.value >= 0 && !record.fields[cols.value].empty()) {
            value = parse_number_field(in, record, cols.value, *cols.value_field);
          } else if (cols.value >= 0 && !cols.value_field->nullable) {
            value = parse_number_field(in, record, cols.value, *cols.value_field);  // the error
          }
          for (size_t k = 0; k < num_numerical; ++k) {
            const int c = cols.numerical[k];
            numbers[k] = c < 0 ? kNullNumber : parse_number_field(in, record, c, *(*cols.fields)[c]);
          }

          // The row is good: hand it over.
          size_t j = 0;
          strings[j++] = user;
          strings[j++] = item;
          if (cols.impression >= 0) strings[j++] = record.fields[cols.impression];
          size_t at = b->text_size;
          size_t total = 0;
          for (std::string_view t : strings) total += t.size();
          if (at + total > UINT32_MAX) throw Error("internal error: batch text over 4 GiB");
          if (at + total > b->text.size()) b->text.resize(std::max(2 * b->text.size(), at + total));
          for (std::string_view t : strings) {
            copy_short(b->text.data() + at, t.data(), t.size());
            at += t.size();
            b->ends.push_back(static_cast<uint32_t>(at));
          }
          b->text_size = at;
          b->item_keys.push_back(make_id_key(item));
          if (!have_previous_user || !same_bytes(user, previous_user)) {
            b->user_changes.emplace_back(static_cast<uint32_t>(b->count), make_id_key(user));
            previous_user.assign(user);
            have_previous_user = true;
          }
          if (cols.event >= 0) {
            const std::string_view name = record.fields[cols.event];
            if (!have_last_event || !same_bytes(name, last_event_name)) {
              last_event = cols.event_types->insert(name);
              last_event_name = (*cols.event_types)[last_event];
              have_last_event = true;
            }
            b->event_types.push_back(last_event);
          } else {
            b->event_types.push_back(cols.no_event_type);
          }
          b->payload.push_back(float_bits(value));
          for (size_t k = 0; k < num_context; ++k) {
            const int c = cols.context[k];
            const std::string_view v = c < 0 ? std::string_view() : trim(record.fields[c]);
            if (v.empty()) {
              b->payload.push_back(kNull);
              continue;
            }
            if (last_context[k] == kNull || !same_bytes(v, last_context_text[k])) {
              last_context[k] = cols.context_vocabularies[k]->insert(v);
              last_context_text[k].assign(v);
            }
            b->payload.push_back(last_context[k]);
          }
          b->timestamps.push_back(timestamp);
          for (size_t k = 0; k < num_numerical; ++k) b->payload.push_back(float_bits(numbers[k]));
          ++b->count;
        } catch (const BadRow& e) {
          b->bad_rows.emplace_back(b->count, e.what());
        }
      }
    } catch (...) {
      b->failure = std::current_exception();
      b->last = true;
    }
    const bool last = b->last;
    b->bytes_consumed = in.bytes_consumed();
    queue.put_full(b);
    if (last) return;
  }
}


// The existing dataset's interactions as a sorted run (incremental imports): already sorted and
// free of duplicates, rows numbered 0.. in their stored order. Pages already read are handed back
// as it goes, so reading a large dataset through its mapping does not grow the import's memory.
class ExistingInteractions : public SortedRun {
 public:
  // context_of[k] / numerical_of[k]: the old field of the builder's field k, or -1.
  ExistingInteractions(const Interactions& old, std::vector<int> context_of,
                       std::vector<int> numerical_of, bool impressions)
      : old_(old),
        context_of_(std::move(context_of)),
        numerical_of_(std::move(numerical_of)),
        impressions_(impressions && !old.impression_offsets.empty()),
        payload_(1 + context_of_.size() + numerical_of_.size()) {}

  bool next() override {
    if (row_ == old_.size()) return false;
    const size_t r = row_++;
    key_ = {old_.timestamp[r], old_.user[r], old_.item[r], old_.event_type[r], static_cast<uint32_t>(r)};
    size_t w = 0;
    payload_[w++] = float_bits(old_.event_value[r]);
    for (int k : context_of_) payload_[w++] = k < 0 ? kNull : old_.context[k].values[r];
    for (int k : numerical_of_) payload_[w++] = float_bits(k < 0 ? kNullNumber : old_.numerical[k].values[r]);
    if (row_ % kReleaseRows == 0) release_read_pages();
    return true;
  }
  const InteractionKey& key() const override { return key_; }
  const uint32_t* payload() const override { return payload_.data(); }
  std::span<const uint32_t> impressions() const override {
    if (!impressions_) return {};
    const size_t r = key_.row;
    return old_.impression_items.subspan(old_.impression_offsets[r],
                                         old_.impression_offsets[r + 1] - old_.impression_offsets[r]);
  }

 private:
  static constexpr size_t kReleaseRows = size_t{1} << 18;

  template <typename T>
  static void release(std::span<const T> column, size_t done) {
    if (column.empty()) return;
    const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(column.data()) & ~(page - 1);
    const auto end = reinterpret_cast<uintptr_t>(column.data() + done) & ~(page - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  void release_read_pages() {
    const size_t done = row_ - 1;
    release(old_.user, done);
    release(old_.item, done);
    release(old_.timestamp, done);
    release(old_.event_type, done);
    release(old_.event_value, done);
    for (const auto& c : old_.context) release(c.values, done);
    for (const auto& x : old_.numerical) release(x.values, done);
    if (impressions_) {
      release(old_.impression_offsets, done);
      release(old_.impression_items, old_.impression_offsets[done]);
    }
  }

  const Interactions& old_;
  std::vector<int> context_of_, numerical_of_;
  bool impressions_;
  std::vector<uint32_t> payload_;
  size_t row_ = 0;
  InteractionKey key_{};
};

}  // namespace

InteractionsBuilder::InteractionsBuilder(const Schema& schema, uint64_t memory_budget, const fs::path& spill_dir) {
  for (const SchemaField& f : schema.fields) {
    switch (field_role(DatasetKind::Interactions, f)) {
      case FieldRole::Categorical: context_.emplace_back().name = f.name; break;
      case FieldRole::Numerical: numerical_.push_back(f.name); break;
      case FieldRole::Impression: has_impressions_ = true; break;
      default: break;
    }
  }
  sorter_ = std::make_unique<InteractionSorter>(payload_words(), has_impressions_, memory_budget,
                                                spill_dir);
}

void InteractionsBuilder::load_existing(const Interactions& old) {
  std::vector<int> context_of, numerical_of;
  for (Context& c : context_) {
    int found = -1;
    for (size_t k = 0; k < old.context.size(); ++k)
      if (old.context[k].name == c.name) found = static_cast<int>(k);
    if (found >= 0) c.vocabulary = IdMap(old.context[found].vocabulary);
    context_of.push_back(found);
  }
  for (const std::string& name : numerical_) {
    int found = -1;
    for (size_t k = 0; k < old.numerical.size(); ++k)
      if (old.numerical[k].name == name) found = static_cast<int>(k);
    numerical_of.push_back(found);
  }
  sorter_->add_sorted(std::make_unique<ExistingInteractions>(old, std::move(context_of),
                                                             std::move(numerical_of), has_impressions_));
  next_row_ = old.size();
}

void InteractionsBuilder::read(CsvInput& in, const Schema& schema, const std::string& schema_source, IdMap& users,
          IdMap& items, IdMap& event_types, BadRowBudget& budget) {
  const std::vector<const SchemaField*> fields = bind_columns(in, schema, schema_source);
  int user_col = -1, item_col = -1, ts_col = -1, event_col = -1, value_col = -1, impression_col = -1;
  const SchemaField* ts_field = nullptr;
  const SchemaField* value_field = nullptr;
  std::vector<int> context_of(context_.size(), -1), numerical_of(numerical_.size(), -1);
  for (size_t c = 0; c < fields.size(); ++c) {
    const int col = static_cast<int>(c);
    switch (field_role(DatasetKind::Interactions, *fields[c])) {
      case FieldRole::UserId: user_col = col; break;
      case FieldRole::ItemId: item_col = col; break;
      case FieldRole::Timestamp: ts_col = col; ts_field = fields[c]; break;
      case FieldRole::EventType: event_col = col; break;
      case FieldRole::EventValue: value_col = col; value_field = fields[c]; break;
      case FieldRole::Impression: impression_col = col; break;
      case FieldRole::Categorical:
        for (size_t k = 0; k < context_.size(); ++k)
          if (context_[k].name == fields[c]->name) context_of[k] = col;
        break;
      case FieldRole::Numerical:
        for (size_t k = 0; k < numerical_.size(); ++k)
          if (numerical_[k] == fields[c]->name) numerical_of[k] = col;
        break;
      default: break;
    }
  }
  const uint32_t no_event_type = event_col < 0 ? event_types.insert("") : 0;

  // Two stages on two threads: a parser reads the CSV, checks and parses each row's fields and
  // hands the rows over in batches; this thread takes the batches in order, assigns the user and
  // item indices and adds the rows to the sort. Each vocabulary belongs to one thread and grows
  // in row order, so indices stay in order of first appearance and the output does not depend
  // on timing.
  Columns columns;
  columns.user = user_col;
  columns.item = item_col;
  columns.timestamp = ts_col;
  columns.event = event_col;
  columns.value = value_col;
  columns.impression = impression_col;
  columns.timestamp_field = ts_field;
  columns.value_field = value_field;
  columns.context = context_of;
  columns.numerical = numerical_of;
  columns.fields = &fields;
  columns.strings_per_row = 2 + (impression_col >= 0);
  columns.event_types = &event_types;
  columns.no_event_type = no_event_type;
  for (Context& c : context_) columns.context_vocabularies.push_back(&c.vocabulary);

  BatchQueue queue;
  std::jthread parser([&] { parse_rows(in, columns, queue); });
  struct CancelOnExit {
    BatchQueue& queue;
    ~CancelOnExit() { queue.cancel(); }  // lets the parser stop before the join
  } cancel_on_exit{queue};

  std::vector<std::string_view> impression;
  std::vector<uint32_t> impression_items;
  const size_t P = payload_words();
  uint32_t last_user = kNoRow;
  for (;;) {
    ParsedRows* batch = queue.take_full();
    const ParsedRows& b = *batch;
    const size_t S = columns.strings_per_row;
    auto text = [&](size_t row, size_t j) {
      const uint32_t begin = row * S + j == 0 ? 0 : b.ends[row * S + j - 1];
      return std::string_view(b.text.data() + begin, b.ends[row * S + j] - begin);
    };
    if (next_row_ + b.count >= UINT32_MAX) {
      throw Error(fmt::format("{} interactions: more than this build's limit of 2^32 - 1",
                              next_row_ + b.count));
    }
    size_t bad = 0;
    // Fetch item slots a few rows ahead.
    constexpr size_t kPrefetch = 32;
    for (size_t i = 0; i < std::min(kPrefetch, b.count); ++i) items.prefetch(b.item_keys[i]);
    constexpr size_t kUserPrefetch = 4;  // users change every few rows
    const auto& changes = b.user_changes;
    for (size_t c = 0; c < std::min(kUserPrefetch, changes.size()); ++c) users.prefetch(changes[c].second);
    size_t change = 0;
    for (size_t i = 0; i < b.count; ++i) {
      while (bad < b.bad_rows.size() && b.bad_rows[bad].first == i) {
        budget.skip(BadRow(b.bad_rows[bad++].second));
      }
      if (i + kPrefetch < b.count) items.prefetch(b.item_keys[i + kPrefetch]);
      // Exports often group a user's events: a run of the same user is looked up once.
      if (change < changes.size() && changes[change].first == i) {
        if (change + kUserPrefetch < changes.size()) users.prefetch(changes[change + kUserPrefetch].second);
        last_user = users.insert(text(i, 0), changes[change++].second);
      }
      const uint32_t item = items.insert(text(i, 1), b.item_keys[i]);
      impression_items.clear();
      if (impression_col >= 0) {
        split_values(text(i, 2), impression);
        for (std::string_view v : impression) impression_items.push_back(items.insert(v));
      }
      const InteractionKey key{b.timestamps[i], last_user, item, b.event_types[i], next_row_++};
      sorter_->add(key, b.payload.data() + i * P, impression_items);
    }
    rows_read_ += b.count;
    while (bad < b.bad_rows.size()) budget.skip(BadRow(b.bad_rows[bad++].second));
    const bool last = b.last;
    const std::exception_ptr failure = b.failure;
    if (on_progress) on_progress(b.bytes_consumed);
    queue.put_free(batch);
    if (failure) std::rethrow_exception(failure);
    if (last) break;
  }
}

void InteractionsBuilder::write(const fs::path& dir, uint32_t num_users, Json& meta, Json& vocabulary_sizes,
           ImportReport& report) {
  // Copying the columns into the page cache is most of this phase: two threads do it.
  ColumnWriterPool writers(2);
  MergedColumn<uint32_t> user(dir / "interactions.user.col", writers),
      item(dir / "interactions.item.col", writers),
      event_type(dir / "interactions.event_type.col", writers);
  MergedColumn<int64_t> timestamp(dir / "interactions.timestamp.col", writers);
  MergedColumn<float> event_value(dir / "interactions.event_value.col", writers);
  std::vector<std::unique_ptr<MergedColumn<uint32_t>>> context;
  std::vector<std::unique_ptr<MergedColumn<float>>> numerical;
  Json names = Json::array();
  for (size_t k = 0; k < context_.size(); ++k) {
    const std::string prefix = fmt::format("interactions.context.{}", k);
    write_strings(dir, prefix + ".vocabulary", context_[k].vocabulary);
    vocabulary_sizes[prefix] = context_[k].vocabulary.size();
    context.push_back(std::make_unique<MergedColumn<uint32_t>>(dir / (prefix + ".values.col"), writers));
    names.push_back(context_[k].name);
  }
  meta["context"] = names;
  names = Json::array();
  for (size_t k = 0; k < numerical_.size(); ++k) {
    numerical.push_back(std::make_unique<MergedColumn<float>>(
        dir / fmt::format("interactions.numerical.{}.col", k), writers));
    names.push_back(numerical_[k]);
  }
  meta["numerical"] = names;
  meta["impressions"] = has_impressions_;
  std::unique_ptr<MergedColumn<uint64_t>> impression_offsets;
  std::unique_ptr<MergedColumn<uint32_t>> impression_items;
  if (has_impressions_) {
    impression_offsets = std::make_unique<MergedColumn<uint64_t>>(
        dir / "interactions.impression_offsets.col", writers);
    impression_items = std::make_unique<MergedColumn<uint32_t>>(
        dir / "interactions.impression_items.col", writers);
    impression_offsets->push(uint64_t{0});
  }
  // Joins the writer thread before the columns it writes go, however this ends.
  struct StopOnExit {
    ColumnWriterPool& writers;
    ~StopOnExit() { writers.stop(); }
  } stop_on_exit{writers};

  std::vector<uint64_t> user_offsets(uint64_t{num_users} + 1, 0);
  uint64_t stored = 0, impressions_total = 0;
  const size_t C = context_.size();
  sorter_->merge([&](const SortedRun& run) {
    const InteractionKey& k = run.key();
    const uint32_t* payload = run.payload();
    user.push(k.user);
    item.push(k.item);
    timestamp.push(k.timestamp);
    event_type.push(k.event_type);
    event_value.push(bits_float(payload[0]));
    for (size_t c = 0; c < C; ++c) context[c]->push(payload[1 + c]);
    for (size_t x = 0; x < numerical.size(); ++x) numerical[x]->push(bits_float(payload[1 + C + x]));
    if (has_impressions_) {
      const std::span<const uint32_t> shown = run.impressions();
      impression_items->push(shown);
      impressions_total += shown.size();
      impression_offsets->push(impressions_total);
    }
    ++user_offsets[k.user + 1];
    ++stored;
  });
  writers.finish();
  for (auto* c : {&user, &item, &event_type}) c->finish();
  timestamp.finish();
  event_value.finish();
  for (auto& c : context) c->finish();
  for (auto& x : numerical) x->finish();
  if (has_impressions_) {
    impression_offsets->finish();
    impression_items->finish();
  }
  for (uint32_t u = 0; u < num_users; ++u) user_offsets[u + 1] += user_offsets[u];
  write_column<uint64_t>(dir / "interactions.user_offsets.col", user_offsets);

  const uint64_t total = next_row_;  // the existing rows and the new ones
  report.interactions = stored;
  report.duplicates = total - stored;
  report.runs_spilled = sorter_->stats().runs_spilled;
  report.merge_passes = sorter_->stats().merge_passes;
  report.bytes_spilled = sorter_->stats().bytes_spilled;
  report.sort_seconds = sorter_->stats().last_sort_seconds;
}

}  // namespace tastebud::datasets::import_detail
