#include "tth/process_group.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <cstring>

#include "check_argument.h"
#include "tth/error.h"

namespace tth {

namespace {

constexpr const char* kWhat = "ProcessGroup";

// c10d reports with c10::Error, whose what() carries a C++ backtrace: the message alone says
// what the user needs.
std::string message_of(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    return c10_error->what_without_backtrace();
  }
  return error.what();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const DistributedOptions& options) {
  // As torch.distributed: GLOO_SOCKET_IFNAME names the interface; else this host's name.
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
      interface != nullptr && *interface != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  if (options.hostname()) {
    return c10d::ProcessGroupGloo::createDeviceForHostname(*options.hostname());
  }
  if (!options.init_file() && is_loopback(options.master_addr())) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// The current CUDA device, through c10's device guard registry, which LibTorch's CUDA library
// fills when it is loaded: no CUDA headers or libraries needed here. Device 0 when CUDA is not
// loaded (then NCCL cannot run anyway, and its own error says so).
c10::Device current_cuda_device() {
  if (c10::impl::hasDeviceGuardImpl(c10::kCUDA)) {
    try {
      return c10::impl::getDeviceGuardImpl(c10::kCUDA)->getDevice();
    } catch (const std::exception&) {
      // no usable GPU: fall through
    }
  }
  return c10::Device(c10::kCUDA, 0);
}

// LibTorch 2.2+ serves a TCPStore through libuv by default, which not every build has
// (Debian's has not: "use_libuv was requested but PyTorch was build without libuv support");
// the classic server is in every build. (Older versions have no such option.)
template <typename StoreOptions>
auto use_classic_server(StoreOptions& store, int) -> decltype(store.useLibUV = false, void()) {
  store.useLibUV = false;
}
template <typename StoreOptions>
void use_classic_server(StoreOptions& /*store*/, long) {}

c10::intrusive_ptr<c10d::Store> rendezvous(const DistributedOptions& options) {
  if (options.init_file()) {
    return c10::make_intrusive<c10d::FileStore>(*options.init_file(), options.world_size());
  }
  c10d::TCPStoreOptions store;
  store.port = static_cast<std::uint16_t>(options.master_port());
  store.isServer = options.rank() == 0;
  store.numWorkers = static_cast<std::size_t>(options.world_size());
  store.waitWorkers = true;
  store.timeout = options.timeout();
  use_classic_server(store, 0);
  return c10::make_intrusive<c10d::TCPStore>(options.master_addr(), store);
}

c10::intrusive_ptr<C10dProcessGroup> make_group(const DistributedOptions& options) {
  auto store = rendezvous(options);
  store->setTimeout(options.timeout());
  if (options.backend() == "nccl") {
#ifdef USE_C10D_NCCL
    auto nccl = c10d::ProcessGroupNCCL::Options::create();
    nccl->timeout = options.timeout();
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, options.rank(), options.world_size(),
                                                       nccl);
#else
    throw Error(fmt::format(
        "{}: backend 'nccl' is not in this LibTorch (built without NCCL); use \"gloo\"", kWhat));
#endif
  }
  auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout());
  gloo->devices.push_back(gloo_device(options));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, options.rank(), options.world_size(),
                                                     gloo);
}

}  // namespace

struct ProcessGroup::Impl {
  c10::intrusive_ptr<C10dProcessGroup> group;
  std::chrono::milliseconds timeout;
  c10::Device device = c10::kCPU;

  // Runs one collective per tensor (c10d's list form means one tensor per device, all of one
  // shape), all started before the first is waited for; names the operation in the error.
  // Starting fails for a local reason (a dtype or device the backend does not take), waiting
  // because of the other ranks: the two errors say which.
  template <typename Start>
  void run(const char* operation, std::vector<at::Tensor>& tensors, Start&& start) {
    std::vector<std::vector<at::Tensor>> each;
    each.reserve(tensors.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    try {
      for (const at::Tensor& tensor : tensors) {
        each.push_back({tensor});
        works.push_back(start(each.back()));
      }
    } catch (const std::exception& error) {
      throw DistributedError(fmt::format(
          "{}: {} could not start on rank {} of {} (check this rank's tensors: their dtype, "
          "device ({} for this group) and shape): {}",
          kWhat, operation, group->getRank(), group->getSize(), device.str(), message_of(error)));
    }
    try {
      for (auto& work : works) work->wait(timeout);
    } catch (const std::exception& error) {
      throw DistributedError(fmt::format(
          "{}: {} failed on rank {} of {}: another rank died or did not take part within the "
          "timeout ({} s): {}",
          kWhat, operation, group->getRank(), group->getSize(),
          std::chrono::duration<double>(timeout).count(), message_of(error)));
    }
  }
};

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ProcessGroup::ProcessGroup(const DistributedOptions& options) {
  check_argument(options.world_size() >= 1, "DistributedOptions", "world_size", "must be >= 1",
                 options.world_size());
  check_argument(options.rank() >= 0 && options.rank() < options.world_size(), "DistributedOptions",
                 "rank", fmt::format("must be in [0, world_size {})", options.world_size()),
                 options.rank());
  check_argument(options.master_port() > 0 && options.master_port() < 65536, "DistributedOptions",
                 "master_port", "must be in [1, 65535]", options.master_port());
  check_argument(options.backend() == "gloo" || options.backend() == "nccl", "DistributedOptions",
                 "backend", "must be \"gloo\" or \"nccl\"", fmt::format("'{}'", options.backend()));
  check_argument(options.timeout().count() > 0, "DistributedOptions", "timeout", "must be > 0 ms",
                 options.timeout().count());
  check_argument(!options.init_file() || !options.init_file()->empty(), "DistributedOptions",
                 "init_file", "must not be empty");
  impl_ = std::make_unique<Impl>();
  impl_->timeout = options.timeout();
  impl_->device = options.backend() == "nccl" ? current_cuda_device() : c10::Device(c10::kCPU);
  try {
    impl_->group = make_group(options);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    const std::string where =
        options.init_file() ? fmt::format("file store '{}'", *options.init_file())
                            : fmt::format("{}:{}", options.master_addr(), options.master_port());
    throw DistributedError(
        fmt::format("{}: rank {} of {} could not join the job through {} within {} s: {}", kWhat,
                    options.rank(), options.world_size(), where,
                    std::chrono::duration<double>(options.timeout()).count(), message_of(error)));
  }
}

std::shared_ptr<ProcessGroup> ProcessGroup::from_c10d(c10::intrusive_ptr<C10dProcessGroup> group,
                                                      std::chrono::milliseconds timeout) {
  check_argument(group.defined(), "ProcessGroup::from_c10d", "group", "must not be null");
  auto impl = std::make_unique<Impl>();
  impl->group = std::move(group);
  impl->timeout = timeout;
  std::string backend;
  try {
    backend = impl->group->getBackendName();
  } catch (const std::exception&) {
    // c10d's base class asserts in getBackendName: not NCCL, collectives on the CPU
  }
  impl->device = backend == "nccl" ? current_cuda_device() : c10::Device(c10::kCPU);
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
}

ProcessGroup::~ProcessGroup() = default;

int ProcessGroup::rank() const noexcept { return impl_->group->getRank(); }
int ProcessGroup::world_size() const noexcept { return impl_->group->getSize(); }
std::chrono::milliseconds ProcessGroup::timeout() const noexcept { return impl_->timeout; }
c10::Device ProcessGroup::device() const noexcept { return impl_->device; }
c10::intrusive_ptr<C10dProcessGroup> ProcessGroup::c10d() const { return impl_->group; }

void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
  impl_->run("all_reduce", tensors,
             [&](std::vector<at::Tensor>& one) { return impl_->group->allreduce(one); });
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root) {
  check_argument(root >= 0 && root < world_size(), "ProcessGroup::broadcast", "root",
                 fmt::format("must be a rank in [0, {})", world_size()), root);
  if (tensors.empty()) return;
  c10d::BroadcastOptions options;
  options.rootRank = root;
  impl_->run("broadcast", tensors,
             [&](std::vector<at::Tensor>& one) { return impl_->group->broadcast(one, options); });
}

void ProcessGroup::barrier() {
  std::vector<at::Tensor> none(1);  // one run of the barrier
  impl_->run("barrier", none,
             [&](std::vector<at::Tensor>& /*unused*/) { return impl_->group->barrier(); });
}

std::string ProcessGroup::broadcast_string(const std::string& text, int root) {
  const at::TensorOptions on_device = at::TensorOptions().device(device());
  std::vector<at::Tensor> size{
      at::tensor({static_cast<int64_t>(text.size())}, on_device.dtype(at::kLong))};
  broadcast(size, root);
  const int64_t length = size[0].cpu().item<int64_t>();
  std::vector<at::Tensor> bytes;
  if (rank() == root && length > 0) {
    // from_blob only reads `text`: the clone owns its memory.
    auto* data = const_cast<char*>(text.data());
    bytes.push_back(at::from_blob(data, {length}, at::kByte).clone().to(device()));
  } else {
    bytes.push_back(at::zeros({std::max<int64_t>(length, 1)}, on_device.dtype(at::kByte)));
  }
  broadcast(bytes, root);
  const at::Tensor received = bytes[0].cpu();
  return std::string(static_cast<const char*>(received.data_ptr()), static_cast<size_t>(length));
}

bool ProcessGroup::all_true(bool value) {
  std::vector<at::Tensor> count{
      at::tensor({value ? int64_t{0} : int64_t{1}}, at::TensorOptions(at::kLong).device(device()))};
  all_reduce_sum(count);
  return count[0].cpu().item<int64_t>() == 0;
}

std::vector<int64_t> ProcessGroup::all_gather(int64_t value) {
  // A sum of one-hot rows: every rank's value lands at its own index.
  at::Tensor row = at::zeros({world_size()}, at::kLong);
  row.data_ptr<int64_t>()[rank()] = value;
  std::vector<at::Tensor> values{row.to(device())};
  all_reduce_sum(values);
  const at::Tensor summed = values[0].cpu().contiguous();
  const auto* data = summed.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + world_size());
}

}  // namespace tth
