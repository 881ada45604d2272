// 64-byte aligned storage for CPU work buffers. Eigen's small-product kernels peel unaligned
// leading elements, so the order of a dot product (and its rounding) can depend on where a buffer
// happens to start; fixed alignment keeps training bit-reproducible.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace tastebud::cpu {

inline constexpr std::size_t kBufferAlignment = 64;

template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kBufferAlignment)));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(kBufferAlignment)); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace tastebud::cpu
