#include "tth/extension.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

#include "check_argument.h"

namespace tth {

namespace {

// The unqualified class name of a type, as Chainer names extensions by their class.
std::string class_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  std::string name = status == 0 ? demangled.get() : type.name();
  // Strip namespaces, but not those inside template arguments.
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (depth == 0 && name.compare(i, 2, "::") == 0) start = i + 2;
  }
  return name.substr(start);
}

class LambdaExtension final : public Extension {
 public:
  LambdaExtension(std::function<void(TorchTrainerHook&)> fn, ExtensionOptions options)
      : fn_(std::move(fn)), options_(std::move(options)) {}

  void operator()(TorchTrainerHook& hook) override { fn_(hook); }
  void initialize(TorchTrainerHook& hook) override {
    if (options_.initializer()) options_.initializer()(hook);
  }
  void on_error(TorchTrainerHook& hook, const std::exception_ptr& error) override {
    if (options_.on_error()) options_.on_error()(hook, error);
  }
  void finalize(TorchTrainerHook& hook) override {
    if (options_.finalizer()) options_.finalizer()(hook);
  }
  std::string default_name() const override { return options_.name(); }
  TriggerRef default_trigger() const override { return options_.trigger(); }
  int default_priority() const override { return options_.priority(); }

 private:
  std::function<void(TorchTrainerHook&)> fn_;
  ExtensionOptions options_;
};

}  // namespace

std::string Extension::default_name() const { return class_name(typeid(*this)); }

std::shared_ptr<Extension> make_extension(std::function<void(TorchTrainerHook&)> fn,
                                          ExtensionOptions options) {
  check_argument(static_cast<bool>(fn), "make_extension", "fn", "must be callable");
  return std::make_shared<LambdaExtension>(std::move(fn), std::move(options));
}

}  // namespace tth
