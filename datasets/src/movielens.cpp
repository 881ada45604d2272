// MovieLens to Personalize-layout CSVs. The three public layouts differ in separators, encodings
// and metadata, so each gets its own small reader over one line-splitting core; the output is the
// same three files `import` reads, ratings as EVENT_TYPE "rating" with the rating as EVENT_VALUE.
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "source_output.h"
#include "tastebud/datasets/sources.h"
#include "tastebud/error.h"

namespace tastebud::datasets {
namespace {

namespace fs = std::filesystem;
using detail::append_csv_field;

// clang-format off
// The 19 genre flags of ml-100k's u.item, in file order (u.genre).
constexpr std::string_view kGenres100k[19] = {
    "unknown", "Action",    "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama", "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance",  "Sci-Fi",   "Thriller",  "War",       "Western"};

// ml-1m's users.dat codes occupations as 0..20 (its README).
constexpr std::string_view kOccupations1m[21] = {
    "other",          "academic/educator",   "artist",          "clerical/admin",
    "college/grad student", "customer service", "doctor/health care", "executive/managerial",
    "farmer",         "homemaker",           "K-12 student",    "lawyer",
    "programmer",     "retired",             "sales/marketing", "scientist",
    "self-employed",  "technician/engineer", "tradesman/craftsman", "unemployed",
    "writer"};
// clang-format on

enum class Separator { kTab, kPipe, kDoubleColon, kCsv };

bool valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t length;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

// ml-100k and ml-1m are Latin-1, later releases UTF-8. A Latin-1 title is almost never valid
// UTF-8 by accident, so text that already is UTF-8 (a re-encoded copy) is kept as it is.
void append_as_utf8(std::string& out, std::string_view text) {
  if (valid_utf8(text)) {
    out.append(text);
    return;
  }
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x80) {
      out.push_back(c);
    } else {
      out.push_back(static_cast<char>(0xC0 | (byte >> 6)));
      out.push_back(static_cast<char>(0x80 | (byte & 0x3F)));
    }
  }
}

// One input file, read in large chunks and split into fields line by line. Errors name the file,
// the line and the field.
class FieldReader {
 public:
  FieldReader(fs::path path, Separator separator, std::vector<std::string_view> field_names)
      : path_(std::move(path)), separator_(separator), names_(std::move(field_names)) {
    file_ = std::fopen(path_.c_str(), "rb");
    if (file_ == nullptr) {
      throw Error("cannot open " + path_.string() + ": " + std::strerror(errno));
    }
    buffer_.resize(1 << 20);
  }
  FieldReader(const FieldReader&) = delete;
  FieldReader& operator=(const FieldReader&) = delete;
  ~FieldReader() { std::fclose(file_); }

  // Reads the next non-blank line into fields; false at the end of the file.
  bool next() {
    std::string_view line;
    do {
      if (!read_line(line)) return false;
    } while (line.empty());
    split(line);
    if (fields_.size() != names_.size()) {
      fail_line("expected " + std::to_string(names_.size()) + " fields, found " +
                std::to_string(fields_.size()));
    }
    return true;
  }

  // Checks that the first line holds exactly these column names (the 20M/latest CSV headers).
  void expect_header() {
    if (!next()) {
      throw Error(path_.string() + ": the file is empty; expected a header row with " +
                  join_names());
    }
    for (size_t i = 0; i < names_.size(); ++i) {
      if (fields_[i] != names_[i]) {
        fail(i, "the header name \"" + std::string(names_[i]) + "\"");
      }
    }
  }

  std::string_view text(size_t field) const { return fields_[field]; }

  // A MovieLens id: a non-negative integer, passed on as written.
  std::string_view id(size_t field) const {
    const std::string_view value = fields_[field];
    if (value.empty() || value.find_first_not_of("0123456789") != std::string_view::npos) {
      fail(field, "a non-negative integer id");
    }
    return value;
  }

  int64_t integer(size_t field) const {
    const std::string_view value = fields_[field];
    int64_t result = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), result);
    if (value.empty() || error != std::errc() || end != value.data() + value.size()) {
      fail(field, "an integer");
    }
    return result;
  }

  double number(size_t field) const {
    const std::string_view value = fields_[field];
    double result = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), result);
    if (value.empty() || error != std::errc() || end != value.data() + value.size() ||
        !std::isfinite(result)) {
      fail(field, "a finite number");
    }
    return result;
  }

  [[noreturn]] void fail(size_t field, const std::string& expected) const {
    std::string got(fields_[field].substr(0, 60));
    throw Error(path_.string() + ":" + std::to_string(line_number_) + ": field " +
                std::to_string(field + 1) + " (" + std::string(names_[field]) + "): expected " +
                expected + ", got \"" + got + "\"");
  }

  std::string join_names() const {
    std::string names;
    for (const std::string_view name : names_) {
      if (!names.empty()) names += ',';
      names += name;
    }
    return names;
  }

  [[noreturn]] void fail_line(const std::string& what) const {
    throw Error(path_.string() + ":" + std::to_string(line_number_) + ": " + what);
  }

 private:
  bool read_line(std::string_view& line) {
    for (;;) {
      const char* start = buffer_.data() + begin_;
      const auto* newline = static_cast<const char*>(std::memchr(start, '\n', end_ - begin_));
      if (newline != nullptr || eof_) {
        if (newline == nullptr && begin_ == end_) return false;
        const size_t length = newline != nullptr ? newline - start : end_ - begin_;
        line = std::string_view(start, length);
        begin_ += length + (newline != nullptr ? 1 : 0);
        ++line_number_;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line_number_ == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
        return true;
      }
      // No full line left: keep the partial one, grow if it fills the buffer, read more.
      std::memmove(buffer_.data(), start, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
      const size_t got = std::fread(buffer_.data() + end_, 1, buffer_.size() - end_, file_);
      if (got == 0) {
        if (std::ferror(file_)) fail_line(std::string("read error: ") + std::strerror(errno));
        eof_ = true;
      }
      end_ += got;
    }
  }

  void split(std::string_view line) {
    fields_.clear();
    if (separator_ == Separator::kCsv && line.find('"') != std::string_view::npos) {
      split_quoted(line);
      return;
    }
    const std::string_view delimiter = separator_ == Separator::kTab           ? "\t"
                                       : separator_ == Separator::kPipe        ? "|"
                                       : separator_ == Separator::kDoubleColon ? "::"
                                                                               : ",";
    size_t start = 0;
    for (;;) {
      const size_t at = line.find(delimiter, start);
      if (at == std::string_view::npos) {
        fields_.push_back(line.substr(start));
        return;
      }
      fields_.push_back(line.substr(start, at - start));
      start = at + delimiter.size();
    }
  }

  // RFC 4180 within one line (MovieLens titles never hold line breaks). Unescaped field text goes
  // to unquoted_ so that fields_ can stay views.
  void split_quoted(std::string_view line) {
    unquoted_.clear();
    unquoted_.reserve(line.size());  // no reallocation below: views into it stay valid
    size_t i = 0;
    for (;;) {
      const size_t field_start = unquoted_.size();
      if (i < line.size() && line[i] == '"') {
        ++i;
        for (;;) {
          if (i >= line.size()) fail_parse("a closing quote before the end of the line");
          if (line[i] == '"') {
            if (i + 1 < line.size() && line[i + 1] == '"') {
              unquoted_.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          unquoted_.push_back(line[i++]);
        }
        if (i < line.size() && line[i] != ',') {
          fail_parse("a comma or the end of the line after the closing quote");
        }
      } else {
        while (i < line.size() && line[i] != ',') {
          if (line[i] == '"')
            fail_parse("no quote inside an unquoted field (quote the whole field)");
          unquoted_.push_back(line[i++]);
        }
      }
      fields_.push_back(std::string_view(unquoted_).substr(field_start));
      if (i >= line.size()) return;
      ++i;  // the comma
    }
  }

  // For the field being split, which may lie past the expected ones.
  [[noreturn]] void fail_parse(const std::string& expected) const {
    const size_t field = fields_.size();
    const std::string name =
        field < names_.size() ? " (" + std::string(names_[field]) + ")" : std::string();
    throw Error(path_.string() + ":" + std::to_string(line_number_) + ": field " +
                std::to_string(field + 1) + name + ": expected " + expected);
  }

  fs::path path_;
  Separator separator_;
  std::vector<std::string_view> names_;
  std::FILE* file_ = nullptr;
  std::string buffer_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_number_ = 0;
  std::vector<std::string_view> fields_;
  std::string unquoted_;
};

// Buffers rows and hands them to the atomic output file in large writes.
class CsvOutput {
 public:
  CsvOutput(const fs::path& path, std::string_view header) : file_(path) { row_ = header; }
  std::string& row() { return row_; }
  void end_row() {
    row_ += '\n';
    if (row_.size() > (1u << 20)) {
      file_.write(row_);
      row_.clear();
    }
  }
  void commit() {
    file_.write(row_);
    file_.commit();
  }

 private:
  detail::AtomicOutputFile file_;
  std::string row_;
};

void append_rating(std::string& out, double rating) {
  char digits[32];
  const auto result = std::to_chars(digits, digits + sizeof(digits), rating);
  out.append(digits, result.ptr);
}

void write_rating_row(CsvOutput& out, std::string_view user, std::string_view item, int64_t time,
                      double rating) {
  std::string& row = out.row();
  row += user;
  row += ',';
  row += item;
  row += ',';
  detail::append_int(row, time);
  row += ",rating,";
  append_rating(row, rating);
  out.end_row();
}

constexpr std::string_view kInteractionsHeader =
    "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n";
constexpr std::string_view kItemsHeader = "ITEM_ID,DESCRIPTION,GENRES\n";
constexpr std::string_view kUsersHeader = "USER_ID,AGE,GENDER,OCCUPATION\n";

// Ratings with user in field 0, item 1, rating 2, timestamp 3.
void convert_ratings(FieldReader& in, CsvOutput& out, bool has_header) {
  if (has_header) in.expect_header();
  while (in.next()) {
    const std::string_view user = in.id(0);
    const std::string_view item = in.id(1);
    const double rating = in.number(2);
    write_rating_row(out, user, item, in.integer(3), rating);
  }
}

void append_text_field(std::string& row, std::string_view text) {
  std::string utf8;
  append_as_utf8(utf8, text);
  append_csv_field(row, utf8);
}

// "unknown" (100K) and "(no genres listed)" (20M) say there is no genre: written as an empty field.
void append_genres(std::string& row, std::string_view genres) {
  if (genres == "(no genres listed)" || genres == "unknown") return;
  append_text_field(row, genres);
}

void write_user_row(CsvOutput& out, std::string_view user, int64_t age, std::string_view gender,
                    std::string_view occupation) {
  std::string& row = out.row();
  row += user;
  row += ',';
  detail::append_int(row, age);
  row += ',';
  append_text_field(row, gender);
  row += ',';
  append_text_field(row, occupation);
  out.end_row();
}

// movies.dat and movies.csv: id, title, `|`-joined genres.
void write_movie_row(CsvOutput& out, const FieldReader& in) {
  std::string& row = out.row();
  row += in.id(0);
  row += ',';
  append_text_field(row, in.text(1));
  row += ',';
  append_genres(row, in.text(2));
  out.end_row();
}

// Each converter commits its files only after every input file converted cleanly, so a bad line
// leaves no new CSV behind.
CsvFiles convert_100k(const fs::path& dir, const fs::path& out_dir) {
  CsvFiles files{out_dir / "interactions.csv", {}, {}};
  CsvOutput interactions(files.interactions, kInteractionsHeader);
  {
    FieldReader in(dir / "u.data", Separator::kTab, {"user id", "item id", "rating", "timestamp"});
    convert_ratings(in, interactions, false);
  }
  std::optional<CsvOutput> users;
  if (fs::exists(dir / "u.user")) {
    files.users = out_dir / "users.csv";
    users.emplace(files.users, kUsersHeader);
    FieldReader in(dir / "u.user", Separator::kPipe,
                   {"user id", "age", "gender", "occupation", "zip code"});
    while (in.next()) {
      const std::string_view user = in.id(0);
      const int64_t age = in.integer(1);
      write_user_row(*users, user, age, in.text(2), in.text(3));
    }
  }
  std::optional<CsvOutput> items;
  if (fs::exists(dir / "u.item")) {
    files.items = out_dir / "items.csv";
    items.emplace(files.items, kItemsHeader);
    std::vector<std::string_view> names = {"movie id", "movie title", "release date",
                                           "video release date", "IMDb URL"};
    names.insert(names.end(), std::begin(kGenres100k), std::end(kGenres100k));
    FieldReader in(dir / "u.item", Separator::kPipe, names);
    std::string genres;
    while (in.next()) {
      std::string& row = items->row();
      row += in.id(0);
      row += ',';
      append_text_field(row, in.text(1));
      row += ',';
      genres.clear();
      for (size_t g = 0; g < 19; ++g) {
        const std::string_view flag = in.text(5 + g);
        if (flag != "0" && flag != "1") in.fail(5 + g, "a genre flag 0 or 1");
        if (flag == "1" && g > 0) {  // flag 0 is "unknown": no genre
          if (!genres.empty()) genres += '|';
          genres += kGenres100k[g];
        }
      }
      append_csv_field(row, genres);
      items->end_row();
    }
  }
  interactions.commit();
  if (users) users->commit();
  if (items) items->commit();
  return files;
}

CsvFiles convert_1m(const fs::path& dir, const fs::path& out_dir) {
  CsvFiles files{out_dir / "interactions.csv", {}, {}};
  CsvOutput interactions(files.interactions, kInteractionsHeader);
  {
    FieldReader in(dir / "ratings.dat", Separator::kDoubleColon,
                   {"UserID", "MovieID", "Rating", "Timestamp"});
    convert_ratings(in, interactions, false);
  }
  std::optional<CsvOutput> users;
  if (fs::exists(dir / "users.dat")) {
    files.users = out_dir / "users.csv";
    users.emplace(files.users, kUsersHeader);
    FieldReader in(dir / "users.dat", Separator::kDoubleColon,
                   {"UserID", "Gender", "Age", "Occupation", "Zip-code"});
    while (in.next()) {
      const std::string_view user = in.id(0);
      // ml-1m's age is the lower bound of its range (1: under 18, 18: 18-24, ..., 56: 56+).
      const int64_t age = in.integer(2);
      const int64_t occupation = in.integer(3);
      if (occupation < 0 || occupation > 20) in.fail(3, "an occupation code from 0 to 20");
      write_user_row(*users, user, age, in.text(1), kOccupations1m[occupation]);
    }
  }
  std::optional<CsvOutput> items;
  if (fs::exists(dir / "movies.dat")) {
    files.items = out_dir / "items.csv";
    items.emplace(files.items, kItemsHeader);
    FieldReader in(dir / "movies.dat", Separator::kDoubleColon, {"MovieID", "Title", "Genres"});
    while (in.next()) write_movie_row(*items, in);
  }
  interactions.commit();
  if (users) users->commit();
  if (items) items->commit();
  return files;
}

CsvFiles convert_20m(const fs::path& dir, const fs::path& out_dir) {
  CsvFiles files{out_dir / "interactions.csv", {}, {}};
  CsvOutput interactions(files.interactions, kInteractionsHeader);
  {
    FieldReader in(dir / "ratings.csv", Separator::kCsv,
                   {"userId", "movieId", "rating", "timestamp"});
    convert_ratings(in, interactions, true);
  }
  std::optional<CsvOutput> items;
  if (fs::exists(dir / "movies.csv")) {
    files.items = out_dir / "items.csv";
    items.emplace(files.items, kItemsHeader);
    FieldReader in(dir / "movies.csv", Separator::kCsv, {"movieId", "title", "genres"});
    in.expect_header();
    while (in.next()) write_movie_row(*items, in);
  }
  interactions.commit();
  if (items) items->commit();
  return files;
}

enum class Layout { k100k, k1m, k20m };

std::optional<Layout> layout_of(const fs::path& dir) {
  if (fs::is_regular_file(dir / "u.data")) return Layout::k100k;
  if (fs::is_regular_file(dir / "ratings.dat")) return Layout::k1m;
  if (fs::is_regular_file(dir / "ratings.csv")) return Layout::k20m;
  return std::nullopt;
}

}  // namespace

CsvFiles convert_movielens(const fs::path& movielens_dir, const fs::path& out_dir) {
  if (!fs::is_directory(movielens_dir)) {
    throw Error("movielens: " + movielens_dir.string() + " is not a directory");
  }
  fs::path dir = movielens_dir;
  std::optional<Layout> layout = layout_of(dir);
  if (!layout) {
    // The parent of an unpacked archive (ml-100k/, ml-1m/, ...) works as well when it holds one.
    std::vector<fs::path> candidates;
    for (const auto& entry : fs::directory_iterator(movielens_dir)) {
      if (entry.is_directory() && layout_of(entry.path())) candidates.push_back(entry.path());
    }
    if (candidates.size() != 1) {
      throw Error("movielens: " + movielens_dir.string() +
                  " holds no MovieLens layout: expected u.data (100K), ratings.dat (1M) or "
                  "ratings.csv (20M/25M/latest)" +
                  (candidates.size() > 1 ? ", found several; name one of them" : ""));
    }
    dir = candidates.front();
    layout = layout_of(dir);
  }
  std::error_code error;
  fs::create_directories(out_dir, error);
  if (error) throw Error("movielens: cannot create " + out_dir.string() + ": " + error.message());
  switch (*layout) {
    case Layout::k100k:
      return convert_100k(dir, out_dir);
    case Layout::k1m:
      return convert_1m(dir, out_dir);
    case Layout::k20m:
      return convert_20m(dir, out_dir);
  }
  throw Error("movielens: unknown layout");
}

}  // namespace tastebud::datasets
