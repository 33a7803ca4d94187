// ProcessGroup: this process's place in a data-parallel job, on LibTorch's c10d.
//
// Every rank of a job constructs one with the same world size and rendezvous:
//
//   auto group = std::make_shared<tth::ProcessGroup>(
//       tth::DistributedOptions(world_size, rank).master_addr("10.0.0.1").master_port(29500));
//   tth::TorchTrainerHook hook(tth::HookOptions(iters).process_group(group));
//
// Rendezvous: rank 0 hosts a c10d TCPStore on master_addr:master_port and the others connect
// to it (or every rank opens the same c10d FileStore, init_file: a new or empty file for each
// job, as PyTorch requires; a crashed job leaves its file behind, and a job that reuses it hangs
// or fails its rendezvous). The collectives then run on
// c10d's ProcessGroupGloo (TCP between the hosts); the backend "nccl" takes ProcessGroupNCCL
// for CUDA tensors where LibTorch was built with it. A group made elsewhere with c10d (any
// backend) is wrapped with ProcessGroup::from_c10d; on LibTorch 2.x that takes the c10d::Backend
// that runs the collectives (e.g. `pg->getBackend(c10::DeviceType::CPU)`), not the
// c10d::ProcessGroup wrapper around it. Nothing here is a communication layer of its own: these
// are thin calls into c10d that turn its failures into tth::DistributedError.
//
// Devices. The tensors of the control collectives (broadcast_string, all_true, all_gather, and
// those of DataParallel and AverageAcrossRanks) live on device(): the CPU for Gloo, the current
// CUDA device for NCCL (which takes CUDA tensors only), decided when the group is made. With
// NCCL, run one rank per GPU and make each rank's GPU its current device before making the
// group (e.g. CUDA_VISIBLE_DEVICES=<local rank>, so that it is device 0). NCCL is not tested
// here (the tests run on CPU with Gloo).
//
// Collectives are called by every rank, in the same order, with tensors of the same shapes.
// A rank that dies or stops calling makes the others' next collective fail: at once when its
// connections close, else after `timeout`; the error names the operation, this rank and the
// timeout. After such an error the group is unusable (as c10d's is): the job restarts. A
// collective that cannot even start on this rank (tensors of a dtype or device the backend does
// not take: a local problem) throws a tth::DistributedError that says so ("could not start").
//
// Thread safety: collectives from one thread at a time.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/arg.h>
#include <torch/version.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace c10d {
#if TORCH_VERSION_MAJOR >= 2
class Backend;
#else
class ProcessGroup;
#endif
}  // namespace c10d

namespace tth {

/// The c10d object that runs the collectives: c10d::ProcessGroup on LibTorch 1.x (which
/// ProcessGroupGloo and ProcessGroupNCCL derive from), c10d::Backend on 2.x.
#if TORCH_VERSION_MAJOR >= 2
using C10dProcessGroup = c10d::Backend;
#else
using C10dProcessGroup = c10d::ProcessGroup;
#endif

/// How a rank joins its job.
struct DistributedOptions {
  /// REQUIRES: world_size >= 1, 0 <= rank < world_size.
  DistributedOptions(int world_size, int rank) : world_size_(world_size), rank_(rank) {}
  /// Number of processes in the job. No default.
  TORCH_ARG(int, world_size);
  /// This process's rank, 0-based. No default.
  TORCH_ARG(int, rank);
  /// Host of rank 0's TCPStore: an address or name every rank can reach. Default "127.0.0.1".
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Its port (rank 0 listens there). Default 29500, as torch.distributed's.
  TORCH_ARG(int, master_port) = 29500;
  /// Rendezvous through a c10d FileStore at this path (on a file system every rank sees)
  /// instead of the TCPStore. The file must be new or empty for each job (a crashed job leaves
  /// it behind; reusing it hangs or fails the rendezvous), as PyTorch requires. Default: none.
  TORCH_ARG(std::optional<std::string>, init_file);
  /// This host's address for the Gloo connections to the other ranks. Default: the address
  /// of this host's name, as torch.distributed picks it (GLOO_SOCKET_IFNAME selects an
  /// interface instead, as in PyTorch); "127.0.0.1" when master_addr is a loopback address.
  TORCH_ARG(std::optional<std::string>, hostname);
  /// "gloo" (CPU tensors) or "nccl" (CUDA tensors; needs a LibTorch built with NCCL).
  /// Default "gloo".
  TORCH_ARG(std::string, backend) = "gloo";
  /// How long rendezvous and each collective wait for the other ranks. Default 5 minutes.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(5);
};

/// One rank of a c10d process group; see the header comment.
class ProcessGroup {
 public:
  /// Joins the job (blocks until every rank has joined, up to the timeout). Throws tth::Error
  /// naming the option for a bad world size, rank, port or backend, and
  /// tth::DistributedError when the rendezvous fails.
  explicit ProcessGroup(const DistributedOptions& options);
  /// Wraps a group made with c10d directly (any backend). On LibTorch 2.x that is the
  /// c10d::Backend (e.g. `pg->getBackend(c10::DeviceType::CPU)`), not the c10d::ProcessGroup
  /// wrapper. device() is the current CUDA device when its getBackendName() is "nccl", else the
  /// CPU. REQUIRES: not null.
  static std::shared_ptr<ProcessGroup> from_c10d(c10::intrusive_ptr<C10dProcessGroup> group,
                                                 std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const noexcept;
  int world_size() const noexcept;
  std::chrono::milliseconds timeout() const noexcept;
  /// Where the tensors of the collectives live: the CPU for Gloo, the current CUDA device (when
  /// the group was made) for NCCL.
  c10::Device device() const noexcept;
  /// The c10d group, for the user's own collectives.
  c10::intrusive_ptr<C10dProcessGroup> c10d() const;

  // ---- Collectives: every rank calls them in the same order (header comment). ----

  /// Sums each tensor over the ranks, in place.
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  /// Replaces each tensor by rank `root`'s, in place.
  void broadcast(std::vector<at::Tensor>& tensors, int root);
  /// Returns when every rank has called it.
  void barrier();
  /// Rank `root`'s `text` (an argument ignored elsewhere), on every rank.
  std::string broadcast_string(const std::string& text, int root);
  /// Whether `value` is true on every rank.
  bool all_true(bool value);
  /// Every rank's `value`, by rank.
  std::vector<int64_t> all_gather(int64_t value);

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tth
