// The CUDA side's plain C++ face: device memory, streams and cuBLAS handles as RAII objects, and
// the device probe. No CUDA header is included here, so engine code and tests compiled by the
// host compiler can hold device buffers and call the launchers in kernels/cuda/*.h. The opaque
// types are the very structs the CUDA headers declare, so a .cu file sees the same types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

struct CUstream_st;    // cudaStream_t is CUstream_st*
struct cublasContext;  // cublasHandle_t is cublasContext*

namespace tastebud::cuda {

using StreamHandle = CUstream_st*;
using BlasHandle = cublasContext*;
// A bfloat16 as stored on the device: its 16 bits (cuda_bf16.h's __nv_bfloat16 in the kernels).
using Bf16 = uint16_t;

// What the machine offers; never throws. False with the reason ("no GPU driver is installed",
// "no GPU is present", ...) when nothing can run.
struct DeviceInfo {
  int device = 0;
  std::string name;
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  int sm_major = 0, sm_minor = 0;
};
bool probe(std::string* reason, DeviceInfo* info = nullptr);

// Debug option: synchronize after every launch so an asynchronous fault is reported at the kernel
// that caused it. Also on when the environment sets TASTEBUD_CUDA_SYNC=1.
void set_debug_sync(bool on);
bool debug_sync();

// Untyped device memory and copies; they throw tastebud::Error on failure.
void* device_alloc(size_t bytes);
void device_free(void* ptr) noexcept;
void copy_to_device(void* dst, const void* src, size_t bytes, StreamHandle stream = nullptr);
// Page-locked host memory, and a copy from it that is only enqueued: src must stay unchanged until
// the stream has passed the copy (the caller's next synchronisation on the stream).
void* pinned_alloc(size_t bytes);
void pinned_free(void* ptr) noexcept;
void copy_to_device_async(void* dst, const void* pinned_src, size_t bytes, StreamHandle stream);
void copy_to_host(void* dst, const void* src, size_t bytes, StreamHandle stream = nullptr);
void copy_device(void* dst, const void* src, size_t bytes, StreamHandle stream = nullptr);
void fill_zero(void* dst, size_t bytes, StreamHandle stream = nullptr);
// Every byte of dst set to `value` (flags, masks).
void fill_bytes(void* dst, unsigned char value, size_t bytes, StreamHandle stream = nullptr);
// Column `column` of a row-major float matrix [rows x width] set to 0 (MF's constant columns of a
// gradient); nothing when column < 0 or rows is 0.
void zero_column(float* d_matrix, int64_t rows, int64_t width, int64_t column, StreamHandle stream = nullptr);
void synchronize(StreamHandle stream);

// Move-only owner of `size` elements of device memory.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t size) { resize(size); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      device_free(ptr_);
      ptr_ = std::exchange(other.ptr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { device_free(ptr_); }

  // Discards the contents when the size changes.
  void resize(size_t size) {
    if (size == size_) return;
    device_free(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    if (size > 0) ptr_ = static_cast<T*>(device_alloc(size * sizeof(T)));
    size_ = size;
  }
  void upload(std::span<const T> host, StreamHandle stream = nullptr) {
    resize(host.size());
    copy_to_device(ptr_, host.data(), host.size_bytes(), stream);
  }
  std::vector<T> download(StreamHandle stream = nullptr) const {
    std::vector<T> host(size_);
    copy_to_host(host.data(), ptr_, size_ * sizeof(T), stream);
    return host;
  }
  void zero(StreamHandle stream = nullptr) { fill_zero(ptr_, size_ * sizeof(T), stream); }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Move-only owner of page-locked host memory (pinned_alloc), for copies that need not wait.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  ~PinnedBuffer() { pinned_free(ptr_); }
  // At least `size` elements; the contents are kept only while the capacity suffices.
  void reserve(size_t size) {
    if (size <= size_) return;
    pinned_free(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    ptr_ = static_cast<T*>(pinned_alloc(size * sizeof(T)));
    size_ = size;
  }
  T* data() { return ptr_; }
  size_t size() const { return size_; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

template <class T>
DeviceBuffer<T> to_device(std::span<const T> host, StreamHandle stream = nullptr) {
  DeviceBuffer<T> buffer;
  buffer.upload(host, stream);
  return buffer;
}
template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host, StreamHandle stream = nullptr) {
  return to_device(std::span<const T>(host), stream);
}

// A non-blocking stream, destroyed with its owner.
class Stream {
 public:
  Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept;
  ~Stream();
  StreamHandle get() const { return handle_; }
  void synchronize() const { cuda::synchronize(handle_); }

 private:
  StreamHandle handle_ = nullptr;
};

// How the matrix products multiply: fp32 throughout, or fp32 operands rounded to TF32 (10-bit
// mantissa) or to bfloat16 (7-bit) for the tensor cores, accumulating in fp32 either way
// (cuBLAS's CUBLAS_COMPUTE_32F_FAST_TF32 / _FAST_16BF). Storage stays fp32.
enum class GemmPrecision { kFp32, kTf32, kBf16 };

// Which kernels a training step runs around its matrix products: one per operation (the bias and
// ReLU after the GEMM, the ReLU mask before the bias gradient's column sums, the GMF product apart
// from the head, a table's row gradients summed before the step that applies them), or fused (the
// bias and ReLU as a cuBLASLt epilogue of the GEMM, the mask inside the column sums, the GMF
// product inside the head's passes, each touched row's gradient summed and applied in one pass).
// Same formulas, same answers within float rounding.
enum class StepKernels { kSeparate, kFused };

// cuBLASLt's state for the fused dense layers (gemm_lt.cu): its handle, workspace and one plan per
// shape. Created with a Blas whose kernels are fused.
struct LtPlans;
std::shared_ptr<LtPlans> make_lt_plans(StreamHandle stream);

// A cuBLAS handle bound to one stream, multiplying at `precision`; with fused kernels, cuBLASLt's
// plans for the epilogue GEMMs too.
class Blas {
 public:
  Blas(StreamHandle stream, GemmPrecision precision, StepKernels kernels = StepKernels::kSeparate);
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  Blas(Blas&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), precision_(other.precision_), kernels_(other.kernels_),
        lt_(std::move(other.lt_)) {}
  Blas& operator=(Blas&& other) noexcept;
  ~Blas();
  BlasHandle get() const { return handle_; }
  GemmPrecision precision() const { return precision_; }
  StepKernels kernels() const { return kernels_; }
  bool fused() const { return kernels_ == StepKernels::kFused; }
  // bf16 products with fused kernels: the MLP's activations, their gradients and a copy of the
  // weights are stored as bfloat16 too (half the bytes of every pass over them); the master
  // weights, their gradients and the optimizer state stay fp32.
  bool bf16_activations() const { return precision_ == GemmPrecision::kBf16 && fused(); }
  LtPlans* lt() const { return lt_.get(); }  // null unless fused

 private:
  BlasHandle handle_ = nullptr;
  GemmPrecision precision_ = GemmPrecision::kFp32;
  StepKernels kernels_ = StepKernels::kSeparate;
  std::shared_ptr<LtPlans> lt_;
};

// Timing with CUDA events, for the benchmarks: milliseconds between record_start and record_stop.
class EventTimer {
 public:
  EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  ~EventTimer();
  void start(StreamHandle stream);
  float stop_ms(StreamHandle stream);  // records the stop event, waits for it, returns the time

 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

}  // namespace tastebud::cuda
