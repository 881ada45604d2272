#include <cstdlib>
#include <string>

#include "cuda/common.cuh"

namespace tastebud::cuda {
namespace {

bool sync_from_env() {
  const char* value = std::getenv("TASTEBUD_CUDA_SYNC");
  return value != nullptr && value[0] == '1';
}
bool g_debug_sync = sync_from_env();

std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

}  // namespace

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
  // Clear a sticky-free error so the next call does not report it again.
  cudaGetLastError();
  throw Error(where(file, line) + ": " + expr + " failed: " + cudaGetErrorName(status) + " (" +
              cudaGetErrorString(status) + ")");
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw Error(where(file, line) + ": " + expr + " failed: " + cublasGetStatusName(status) + " (" +
              cublasGetStatusString(status) + ")");
}

void check_launch(const char* kernel, StreamHandle stream, const char* file, int line) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess && g_debug_sync) status = cudaStreamSynchronize(stream);
  if (status != cudaSuccess) {
    throw Error(where(file, line) + ": kernel " + kernel + " failed: " + cudaGetErrorName(status) +
                " (" + cudaGetErrorString(status) + ")");
  }
}

void set_debug_sync(bool on) { g_debug_sync = on; }
bool debug_sync() { return g_debug_sync; }

bool probe(std::string* reason, DeviceInfo* info) {
  auto fail = [&](std::string why) {
    if (reason) *reason = std::move(why);
    return false;
  };
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorInsufficientDriver || status == cudaErrorNoDevice || count == 0) {
    cudaGetLastError();
    return fail(status == cudaErrorInsufficientDriver ? "no GPU driver is installed" : "no GPU is present");
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    return fail(std::string("CUDA is unusable: ") + cudaGetErrorString(status));
  }
  int device = 0;
  cudaDeviceProp props{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&props, device) != cudaSuccess) {
    cudaGetLastError();
    return fail("no GPU answers");
  }
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t mem = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (mem != cudaSuccess) {
    cudaGetLastError();
    return fail(std::string("the CUDA device cannot be used: ") + cudaGetErrorString(mem));
  }
  if (info) {
    info->device = device;
    info->name = props.name;
    info->free_bytes = free_bytes;
    info->total_bytes = total_bytes;
    info->sm_major = props.major;
    info->sm_minor = props.minor;
  }
  return true;
}

void* device_alloc(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    throw Error("cudaMalloc of " + std::to_string(bytes) + " bytes failed (" +
                cudaGetErrorString(status) + "); " + std::to_string(free_bytes) + " of " +
                std::to_string(total_bytes) + " bytes are free on the device");
  }
  return ptr;
}

void device_free(void* ptr) noexcept {
  if (ptr != nullptr) cudaFree(ptr);
}

void* pinned_alloc(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocHost(&ptr, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw Error("cudaMallocHost of " + std::to_string(bytes) + " bytes failed (" + cudaGetErrorString(status) + ")");
  }
  return ptr;
}

void pinned_free(void* ptr) noexcept {
  if (ptr != nullptr) cudaFreeHost(ptr);
}

void copy_to_device_async(void* dst, const void* pinned_src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, pinned_src, bytes, cudaMemcpyHostToDevice, stream));
}

void copy_to_device(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  // The host buffer may go away when the caller returns.
  TB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_to_host(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  TB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_device(void* dst, const void* src, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  TB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
}

void fill_zero(void* dst, size_t bytes, StreamHandle stream) { fill_bytes(dst, 0, bytes, stream); }

void fill_bytes(void* dst, unsigned char value, size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  TB_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, stream));
}

void zero_column(float* d_matrix, int64_t rows, int64_t width, int64_t column, StreamHandle stream) {
  if (column < 0 || rows <= 0) return;
  const size_t pitch = static_cast<size_t>(width) * sizeof(float);
  TB_CUDA_CHECK(cudaMemset2DAsync(d_matrix + column, pitch, 0, sizeof(float), static_cast<size_t>(rows), stream));
}

void synchronize(StreamHandle stream) { TB_CUDA_CHECK(cudaStreamSynchronize(stream)); }

Stream::Stream() { TB_CUDA_CHECK(cudaStreamCreateWithFlags(&handle_, cudaStreamNonBlocking)); }
Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (handle_) cudaStreamDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}
Stream::~Stream() {
  if (handle_) cudaStreamDestroy(handle_);
}

Blas::Blas(StreamHandle stream, GemmPrecision precision, StepKernels kernels)
    : precision_(precision), kernels_(kernels) {
  TB_CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    TB_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    TB_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
    TB_CUBLAS_CHECK(cublasSetMathMode(
        handle_, precision == GemmPrecision::kTf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    if (kernels == StepKernels::kFused) lt_ = make_lt_plans(stream);
  } catch (...) {
    cublasDestroy(handle_);
    throw;
  }
}
Blas& Blas::operator=(Blas&& other) noexcept {
  if (this != &other) {
    if (handle_) cublasDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    precision_ = other.precision_;
    kernels_ = other.kernels_;
    lt_ = std::move(other.lt_);
  }
  return *this;
}
Blas::~Blas() {
  if (handle_) cublasDestroy(handle_);
}

EventTimer::EventTimer() {
  cudaEvent_t a = nullptr, b = nullptr;
  TB_CUDA_CHECK(cudaEventCreate(&a));
  const cudaError_t status = cudaEventCreate(&b);
  if (status != cudaSuccess) {
    cudaEventDestroy(a);
    throw_cuda_error(status, "cudaEventCreate(&b)", __FILE__, __LINE__);
  }
  start_ = a;
  stop_ = b;
}
EventTimer::~EventTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}
void EventTimer::start(StreamHandle stream) {
  TB_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_), stream));
}
float EventTimer::stop_ms(StreamHandle stream) {
  TB_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(stop_), stream));
  TB_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0;
  TB_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

}  // namespace tastebud::cuda
