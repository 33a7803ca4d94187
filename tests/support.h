// Shared test helpers with LibTorch: a recording extension and tensor equality, beside the
// LibTorch-free ones of test_util.h.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#include "tth/tth.h"

namespace tth::test {

/// Records every hook call as "<name>:<hook>@<iteration>" into a shared log.
class Recorder : public Extension {
 public:
  Recorder(std::string name, std::vector<std::string>* log) : name_(std::move(name)), log_(log) {}

  void operator()(TorchTrainerHook& hook) override { record("call", hook); }
  void initialize(TorchTrainerHook& hook) override { record("initialize", hook); }
  void on_error(TorchTrainerHook& hook, const std::exception_ptr& error) override {
    error_seen = static_cast<bool>(error);
    record("on_error", hook);
    if (throw_in_on_error) throw std::runtime_error("handler failure");
  }
  void finalize(TorchTrainerHook& hook) override { record("finalize", hook); }
  std::string default_name() const override { return name_; }

  bool throw_in_on_error = false;
  bool error_seen = false;

 private:
  void record(const char* what, const TorchTrainerHook& hook) {
    log_->push_back(name_ + ":" + what + "@" + std::to_string(hook.iteration()));
  }
  std::string name_;
  std::vector<std::string>* log_;
};

/// Each test process works in a fresh temporary directory of its own: hooks with the default
/// out directory ("result") in test processes that run at once (ctest -j) never share one,
/// which the output directory lock would refuse.
class OwnWorkingDirectory : public ::testing::Environment {
 public:
  void SetUp() override {
    directory_ = std::make_unique<TempDir>();
    previous_ = std::filesystem::current_path();
    std::filesystem::current_path(directory_->path());
  }
  void TearDown() override {
    std::filesystem::current_path(previous_);
    directory_.reset();
  }

 private:
  std::unique_ptr<TempDir> directory_;
  std::filesystem::path previous_;
};
inline const bool kOwnWorkingDirectory =
    (::testing::AddGlobalTestEnvironment(new OwnWorkingDirectory), true);

/// Collects the library's warnings (diagnostics.h) while alive, then restores the handler.
class CapturedWarnings {
 public:
  CapturedWarnings()
      : previous_(set_warning_handler([this](const std::string& m) { messages_.push_back(m); })) {}
  ~CapturedWarnings() { set_warning_handler(previous_); }
  CapturedWarnings(const CapturedWarnings&) = delete;
  CapturedWarnings& operator=(const CapturedWarnings&) = delete;

  const std::vector<std::string>& messages() const { return messages_; }
  /// Whether some warning contains `fragment`.
  bool contains(const std::string& fragment) const {
    for (const auto& message : messages_) {
      if (message.find(fragment) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::vector<std::string> messages_;
  WarningHandler previous_;
};

/// A small model (3 -> width -> 2) with Adam, registered as "main" with a hook writing to
/// `out`: the training that the snapshot tests save, kill and resume.
struct Training {
  explicit Training(const std::string& out, int64_t seed = 0, int64_t width = 4) {
    torch::manual_seed(seed);
    model = torch::nn::Sequential(torch::nn::Linear(3, width), torch::nn::Linear(width, 2));
    optimizer =
        std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
    hook = std::make_unique<TorchTrainerHook>(HookOptions(4).out(out));
    hook->add_model("main", model);
    hook->add_optimizer("main", optimizer);
  }
  void step() {
    hook->run_iteration([&] {
      optimizer->zero_grad();
      model->forward(torch::randn({5, 3})).pow(2).mean().backward();
      optimizer->step();
    });
  }
  void steps(int n) {
    for (int i = 0; i < n; ++i) step();
  }
  torch::nn::Sequential model{nullptr};
  std::shared_ptr<torch::optim::Adam> optimizer;
  std::unique_ptr<TorchTrainerHook> hook;
};

/// Bitwise equality of dtype, shape and contents.
inline bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && a.equal(b);
}

/// The regular files under `dir` (relative paths, sorted), but the lock files a live (or
/// killed) run keeps there.
inline std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename() == kLockFileName) continue;
    names.push_back(std::filesystem::relative(entry.path(), dir).string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// Runs `n` empty iterations of `hook`.
inline void run_empty(TorchTrainerHook& hook, int n) {
  for (int i = 0; i < n; ++i) hook.run_iteration([] {});
}

}  // namespace tth::test
