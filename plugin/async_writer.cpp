#include "tth/async_writer.h"

#include <ATen/Functions.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "check_argument.h"
#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"

namespace tth {
namespace detail {

namespace {

// Each copy starts on a cache line, which also aligns every dtype.
constexpr int64_t kAlignment = 64;

int64_t aligned(int64_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Tensors whose copy is a plain strided tensor in the staging buffer; others (sparse,
// quantized, undefined) are cloned as they are.
bool stageable(const at::Tensor& tensor) {
  return tensor.defined() && tensor.layout() == at::kStrided && !tensor.is_quantized();
}

int64_t staging_bytes(const StateDict& state) {
  int64_t bytes = 0;
  for (const auto& entry : state) {
    if (const auto* tensor = std::get_if<at::Tensor>(&entry.second)) {
      if (stageable(*tensor)) bytes += aligned(static_cast<int64_t>(tensor->nbytes()));
    }
  }
  return bytes;
}

bool on_accelerator(const StateDict& state) {
  for (const auto& entry : state) {
    if (const auto* tensor = std::get_if<at::Tensor>(&entry.second)) {
      if (tensor->defined() && !tensor->is_cpu()) return true;
    }
  }
  return false;
}

// A host buffer for the copies of one snapshot.
struct Buffer {
  at::Tensor bytes;  // 1-d kByte; empty when no buffer was needed
  bool pinned = false;

  int64_t size() const { return bytes.defined() ? bytes.numel() : 0; }
};

// Copies every tensor of `state` into `buffer` (views of it replace the tensors), so that the
// result shares no memory with the training's tensors.
StateDict copy_into(StateDict state, const Buffer& buffer) {
  at::NoGradGuard no_grad;  // a copy, not a step of a graph
  StateDict copy;
  int64_t offset = 0;
  for (auto& entry : state.release()) {
    if (auto* tensor = std::get_if<at::Tensor>(&entry.second)) {
      if (stageable(*tensor)) {
        const auto bytes = static_cast<int64_t>(tensor->nbytes());
        if (bytes == 0) {  // nothing to copy, and no buffer when the whole state is empty
          copy.set(entry.first, at::empty(tensor->sizes(), tensor->options().device(at::kCPU)));
          continue;
        }
        // A storage of its own for each copy (savefuns write storages, and one storage holds
        // one dtype), in the buffer's memory, which it keeps alive.
        at::Tensor staged = at::from_blob(
            static_cast<uint8_t*>(buffer.bytes.data_ptr()) + offset, tensor->sizes(),
            [keep = buffer.bytes](void*) {}, at::TensorOptions().dtype(tensor->scalar_type()));
        if (tensor->is_cpu() && tensor->is_contiguous() && !tensor->is_conj() &&
            !tensor->is_neg()) {
          // One memcpy: at::copy_ splits a large copy over the intra-op threads, which made
          // the stall several times slower than memcpy while those threads were busy.
          std::memcpy(staged.data_ptr(), tensor->data_ptr(), bytes);
        } else {
          staged.copy_(*tensor);  // strided, on a GPU, or with a lazy conjugate/negation
        }
        offset += aligned(bytes);
        copy.set(entry.first, std::move(staged));
      } else {
        copy.set(entry.first, tensor->defined() ? tensor->to(at::kCPU).clone() : at::Tensor());
      }
    } else {
      copy.set(entry.first, std::move(entry.second));
    }
  }
  return copy;
}

}  // namespace

// The background thread of ThreadWriter and QueueWriter, and their reused buffers. Jobs are
// written in order; the front job is the one being written.
class WriterThread {
 public:
  // `max_bytes` bounds the staged bytes of all queued jobs; -1 allows one job at a time.
  WriterThread(const char* who, SaveFunction savefun, int64_t max_bytes)
      : who_(who), savefun_(std::move(savefun)), max_bytes_(max_bytes) {
    check_argument(static_cast<bool>(savefun_), who_, "savefun", "must be callable");
    thread_ = std::thread([this] { run(); });
  }

  ~WriterThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();  // after the queue is drained
    for (const Failure& failure : failures_) {
      warn(fmt::format("{}: an error of a background write was never raised: {}", who_,
                       describe(failure)));
    }
  }

  void write(const std::string& path, StateDict state, const std::function<void()>& committed) {
    const int64_t bytes = staging_bytes(state);
    const bool pinned = on_accelerator(state);
    Buffer buffer;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return has_room(bytes); });
      raise_failures(lock);
      buffer = take_buffer(bytes, pinned);
    }
    Job job{path, StateDict(), buffer, bytes, committed};
    try {
      job.state = copy_into(std::move(state), buffer);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(std::move(buffer));
      throw;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queued_bytes_ += bytes;
      jobs_.push_back(std::move(job));
    }
    changed_.notify_all();
  }

  void finalize() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return jobs_.empty(); });
    raise_failures(lock);
  }

 private:
  struct Job {
    std::string path;
    StateDict state;
    Buffer buffer;
    int64_t bytes;
    std::function<void()> committed;
  };
  struct Failure {
    std::string path;
    std::exception_ptr error;
  };

  bool has_room(int64_t bytes) const {
    if (jobs_.empty()) return true;  // a snapshot larger than the bound goes alone
    return max_bytes_ >= 0 && queued_bytes_ + bytes <= max_bytes_;
  }

  // A free buffer of at least `bytes` (the smallest such), else a new one. Free buffers too
  // small for this snapshot are released first: states rarely shrink, and memory held in
  // buffers must stay near what the queue needs.
  Buffer take_buffer(int64_t bytes, bool pinned) {
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->pinned == pinned && it->size() >= bytes &&
          (best == free_.end() || it->size() < best->size())) {
        best = it;
      }
    }
    if (best != free_.end()) {
      Buffer buffer = std::move(*best);
      free_.erase(best);
      return buffer;
    }
    free_.clear();
    Buffer buffer;
    buffer.pinned = pinned;
    if (bytes > 0) {
      buffer.bytes = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(pinned));
    }
    return buffer;
  }

  static std::string describe(const Failure& failure) {
    try {
      std::rethrow_exception(failure.error);
    } catch (const std::exception& error) {
      return fmt::format("'{}': {}", failure.path, error.what());
    } catch (...) {
      return fmt::format("'{}': unknown error", failure.path);
    }
  }

  // Throws the first failure not raised yet, naming every other one; the original exception
  // is nested (std::rethrow_if_nested gives it back).
  void raise_failures(std::unique_lock<std::mutex>& lock) {
    if (failures_.empty()) return;
    std::vector<Failure> failures = std::move(failures_);
    failures_.clear();
    lock.unlock();
    std::string message =
        fmt::format("{}: a background write failed: {}", who_, describe(failures.front()));
    for (size_t i = 1; i < failures.size(); ++i) {
      message += fmt::format("; and another: {}", describe(failures[i]));
    }
    try {
      std::rethrow_exception(failures.front().error);
    } catch (...) {
      std::throw_with_nested(Error(message));
    }
  }

  void run() {
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
        if (jobs_.empty()) return;
        job = &jobs_.front();  // stays in place: only this thread pops, write() pushes back
      }
      std::exception_ptr error;
      try {
        atomic_write(job->path, [&](const std::string& temp) { savefun_(temp, job->state); });
        if (job->committed) job->committed();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error) failures_.push_back({job->path, error});
        job->state = StateDict();  // drop the views before the buffer is reused
        // Reused only when nothing kept a view of it (a savefun or a callback could have).
        if (job->buffer.bytes.use_count() <= 1) free_.push_back(std::move(job->buffer));
        queued_bytes_ -= job->bytes;
        jobs_.pop_front();
      }
      changed_.notify_all();
    }
  }

  const char* who_;
  SaveFunction savefun_;
  const int64_t max_bytes_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> jobs_;
  int64_t queued_bytes_ = 0;
  std::vector<Buffer> free_;
  std::vector<Failure> failures_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace detail

ThreadWriter::ThreadWriter(SaveFunction savefun)
    : thread_(std::make_unique<detail::WriterThread>("ThreadWriter", std::move(savefun), -1)) {}

ThreadWriter::~ThreadWriter() = default;

void ThreadWriter::write(const std::string& path, StateDict state,
                         const std::function<void()>& committed) {
  thread_->write(path, std::move(state), committed);
}

void ThreadWriter::finalize() { thread_->finalize(); }

namespace {
int64_t checked_max_bytes(int64_t max_bytes) {
  check_argument(max_bytes > 0, "QueueWriter", "max_bytes", "must be > 0", max_bytes);
  return max_bytes;
}
}  // namespace

QueueWriter::QueueWriter(int64_t max_bytes, SaveFunction savefun)
    : thread_(std::make_unique<detail::WriterThread>("QueueWriter", std::move(savefun),
                                                     checked_max_bytes(max_bytes))) {}

QueueWriter::~QueueWriter() = default;

void QueueWriter::write(const std::string& path, StateDict state,
                        const std::function<void()>& committed) {
  thread_->write(path, std::move(state), committed);
}

void QueueWriter::finalize() { thread_->finalize(); }

}  // namespace tth
