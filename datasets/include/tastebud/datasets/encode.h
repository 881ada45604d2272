// The pieces of encoding that import and the readers of a dataset share: the id -> dense index
// map, strict number parsing, and the hashing of text into tokens.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "tastebud/datasets/dataset.h"

namespace tastebud::datasets {

// An id's first 16 bytes as two little-endian words (zero-padded), loaded without reading past
// the string; with the length they are the whole key of ids up to 16 bytes, which is most ids.
struct IdKey {
  uint64_t head = 0, tail = 0;
  uint64_t hash = 0;
  uint32_t length = 0;
};

inline uint64_t load_u64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t load_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 64x64 -> 128-bit multiply folded to 64 bits: a fast, well-mixing step (as in wyhash).
inline uint64_t fold_multiply(uint64_t a, uint64_t b) {
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

// Not persisted anywhere: only for IdMap, so it may change freely.
inline IdKey make_id_key(std::string_view s) {
  IdKey k;
  const char* p = s.data();
  const size_t n = s.size();
  k.length = static_cast<uint32_t>(n);
  if (n >= 16) {
    k.head = load_u64(p);
    k.tail = load_u64(p + 8);
  } else if (n >= 8) {
    k.head = load_u64(p);
    k.tail = n == 8 ? 0 : load_u64(p + n - 8) >> (8 * (16 - n));
  } else if (n >= 4) {
    k.head = load_u32(p) | ((load_u32(p + n - 4) >> (8 * (8 - n))) << 32);
  } else {
    for (size_t i = 0; i < n; ++i) k.head |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  }
  uint64_t h = fold_multiply(k.head ^ 0xa0761d6478bd642full, k.tail ^ 0xe7037ed1a0b428dbull ^ n);
  for (size_t i = 16; i < n; i += 8) {  // ids longer than 16 bytes: fold in the rest
    const uint64_t w = i + 8 <= n ? load_u64(p + i) : load_u64(p + n - 8) >> (8 * (i + 8 - n));
    h = fold_multiply(h ^ w, 0x8ebc6af09c88c6e3ull);
  }
  k.hash = fold_multiply(h, 0x589965cc75374cc3ull);
  return k;
}

// Strings to dense indices 0, 1, 2, ... in order of first insertion. Open addressing with linear
// probing; a slot holds the hash and the first 16 bytes of its id, so looking up an id of up to 16
// bytes touches one cache line. The strings live in one byte blob that is also the StringTable
// written to disk.
class IdMap {
 public:
  IdMap() { rehash(1024); }
  // Starts from an existing vocabulary so that its ids keep their indices (incremental import).
  explicit IdMap(const StringTable& existing) {
    rehash(1024);
    for (size_t i = 0; i < existing.size(); ++i) insert(existing[i]);
  }

  uint32_t insert(std::string_view id) { return insert(id, make_id_key(id)); }
  // With the key computed beforehand (possibly on another thread).
  uint32_t insert(std::string_view id, const IdKey& key) {
    for (uint64_t s = key.hash & mask_;; s = (s + 1) & mask_) {
      Slot& slot = slots_[s];
      if (slot.index == kEmpty) {
        const auto index = static_cast<uint32_t>(offsets_.size() - 1);
        bytes_.insert(bytes_.end(), id.begin(), id.end());
        offsets_.push_back(bytes_.size());
        slot = {key.head, key.tail, key.hash, index, key.length};
        if ((offsets_.size() - 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
        return index;
      }
      if (matches(slot, id, key)) return slot.index;
    }
  }

  std::optional<uint32_t> find(std::string_view id) const {
    const IdKey key = make_id_key(id);
    for (uint64_t s = key.hash & mask_;; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.index == kEmpty) return std::nullopt;
      if (matches(slot, id, key)) return slot.index;
    }
  }

  // Starts loading the slot where key's probe begins, for an insert a few rows later.
  void prefetch(const IdKey& key) const { __builtin_prefetch(&slots_[key.hash & mask_]); }

  uint32_t size() const { return static_cast<uint32_t>(offsets_.size() - 1); }
  std::string_view operator[](uint32_t i) const {
    return {bytes_.data() + offsets_[i], static_cast<size_t>(offsets_[i + 1] - offsets_[i])};
  }
  const std::vector<uint64_t>& offsets() const { return offsets_; }
  const std::vector<char>& bytes() const { return bytes_; }

 private:
  struct Slot {
    uint64_t head, tail, hash;
    uint32_t index, length;
  };
  static constexpr uint32_t kEmpty = UINT32_MAX;

  bool matches(const Slot& slot, std::string_view id, const IdKey& key) const {
    if (slot.hash != key.hash || slot.head != key.head || slot.tail != key.tail ||
        slot.length != key.length) {
      return false;
    }
    return key.length <= 16 || (*this)[slot.index] == id;
  }

  void rehash(size_t slot_count) {
    std::vector<Slot> old = std::move(slots_);
    // A large table in huge pages: its probes land anywhere, and with 4 KiB pages nearly each
    // one would also miss the TLB. The hint goes before the first touch (a hint: refused where
    // the kernel does not offer it).
    slots_.reserve(slot_count);
    constexpr size_t kHuge = size_t{2} << 20;
    if (slot_count * sizeof(Slot) >= 2 * kHuge) {
      const auto begin = (reinterpret_cast<uintptr_t>(slots_.data()) + kHuge - 1) & ~(kHuge - 1);
      const auto end = (reinterpret_cast<uintptr_t>(slots_.data() + slot_count)) & ~(kHuge - 1);
      if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
    slots_.assign(slot_count, Slot{0, 0, 0, kEmpty, 0});
    mask_ = slot_count - 1;
    for (const Slot& slot : old) {
      if (slot.index == kEmpty) continue;
      uint64_t s = slot.hash & mask_;
      while (slots_[s].index != kEmpty) s = (s + 1) & mask_;
      slots_[s] = slot;
    }
  }

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  std::vector<uint64_t> offsets_{0};
  std::vector<char> bytes_;
};

// Strips ASCII spaces and tabs at both ends.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A whole decimal integer with an optional sign, nothing else ("1.5", "1e9" and "" fail).
bool parse_int64(std::string_view text, int64_t* value);

enum class NumberParse { Ok, Empty, NotANumber, NotFinite };
// A decimal number as float. NaN, infinities and values beyond float's range are NotFinite:
// a null is written as an empty field, never as "nan".
NumberParse parse_float(std::string_view text, float* value);

// "true"/"false" (any case) or "1"/"0".
bool parse_bool(std::string_view text, bool* value);

// The token hash of the textual field: 32-bit FNV-1a of the ASCII-lower-cased token, modulo
// kTextHashBuckets. Tokens are maximal runs of ASCII letters and digits and non-ASCII bytes, so a
// UTF-8 word stays one token. Anyone hashing query text must use the same function.
inline uint32_t text_token_hash(std::string_view token) {
  uint32_t h = 2166136261u;
  for (char c : token) {
    auto b = static_cast<uint8_t>(c);
    if (b >= 'A' && b <= 'Z') b = static_cast<uint8_t>(b + ('a' - 'A'));
    h = (h ^ b) * 16777619u;
  }
  return h % kTextHashBuckets;
}

template <typename F>
void for_each_text_token(std::string_view text, F&& emit) {
  auto is_token_byte = [](uint8_t b) {
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b >= 0x80;
  };
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !is_token_byte(static_cast<uint8_t>(text[i]))) ++i;
    const size_t start = i;
    while (i < text.size() && is_token_byte(static_cast<uint8_t>(text[i]))) ++i;
    if (i > start) emit(text_token_hash(text.substr(start, i - start)));
  }
}

}  // namespace tastebud::datasets
