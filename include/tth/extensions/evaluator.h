// Evaluator: means of what an evaluation function reports over one pass of validation data.
//
// Chainer's Evaluator. When its trigger fires (default every epoch) it runs `eval_fn` on each
// batch of one full pass over the validation data. Each batch gets an observation scope of its
// own (reporter.h), so whatever `eval_fn` reports (`tth::report("main/loss", loss)`) is
// collected per batch into a DictSummary; the result is the mean over batches of each key, as
// Chainer averages (a smaller last batch weighs as much as a full one; use MicroAverage for a
// per-example ratio). The means are reported into the current observation under
// "<name>/<key>" ("validation/main/loss"), where <name> is the name the extension is
// registered under (`extend(..., ExtendOptions().name("test"))` gives "test/main/loss").
//
// During the pass the model (every submodule) is in eval mode and autograd is off
// (torch::NoGradGuard), as Chainer's `train = False` and `no_backprop_mode`; afterwards each
// submodule gets back the train/eval mode it had, also when `eval_fn` or the data throws.
//
// Its priority is kWriter, so the triggers of lower-priority extensions evaluated in the same
// iteration (a MaxValueTrigger on "validation/main/accuracy", a LogReport) see its values.
//
// State: none (the means of one pass are reported in the iteration that computes them).
// Thread safety: training thread only.
#pragma once

#include <torch/arg.h>
#include <torch/data/example.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tth/batch_iterator.h"
#include "tth/extension.h"
#include "tth/torch_fwd.h"

namespace tth {

/// Computes and reports (tth::report) the metrics of one validation batch, e.g.
/// `[&](const tth::Batch& b) { tth::report("main/loss", criterion(model(b.data), b.target)); }`.
using EvalFunction = std::function<void(const Batch&)>;
/// One full pass over the validation data: calls its argument once per batch.
using BatchLoop = std::function<void(const std::function<void(const Batch&)>&)>;

/// Options of Evaluator.
struct EvaluatorOptions {
  /// The default name, and the prefix of the reported keys until the extension is registered
  /// (then the registered name is). Default "validation", as Chainer's.
  TORCH_ARG(std::string, name) = "validation";
  /// The default trigger. Default {1, epoch}.
  TORCH_ARG(TriggerRef, trigger) = TriggerRef(1, epoch);
};

/// Evaluates a model on validation data; see the header comment.
class Evaluator : public Extension {
 public:
  /// REQUIRES: a callable `batches`, a non-null `model`, a callable `eval_fn` (tth::Error
  /// naming the argument otherwise).
  Evaluator(BatchLoop batches, std::shared_ptr<torch::nn::Module> model, EvalFunction eval_fn,
            EvaluatorOptions options = {});

  /// Over a BatchIterator (batch_iterator.h): one pass is its batches from the start of an
  /// epoch to its end (build it with shuffle(false) for a fixed order). REQUIRES: non-null.
  Evaluator(std::shared_ptr<BatchIterator> iterator, std::shared_ptr<torch::nn::Module> model,
            EvalFunction eval_fn, EvaluatorOptions options = {});

  /// Over a LibTorch data loader handed over, as `make_data_loader` returns it.
  template <typename DataLoader>
  Evaluator(std::unique_ptr<DataLoader> loader, std::shared_ptr<torch::nn::Module> model,
            EvalFunction eval_fn, EvaluatorOptions options = {})
      : Evaluator(std::shared_ptr<DataLoader>(std::move(loader)), std::move(model),
                  std::move(eval_fn), std::move(options)) {}

  /// Over any LibTorch data loader (`torch::data::make_data_loader(...)`): one pass is
  /// begin()..end(). Batches that are vectors of examples (a loader without a Stack
  /// transform) are stacked into one Batch. REQUIRES: a non-null loader.
  template <typename DataLoader>
  Evaluator(std::shared_ptr<DataLoader> loader, std::shared_ptr<torch::nn::Module> model,
            EvalFunction eval_fn, EvaluatorOptions options = {})
      : Evaluator(loop_over(std::move(loader)), std::move(model), std::move(eval_fn),
                  std::move(options)) {}

  /// Runs one pass and returns the mean of each reported key, keyed "<prefix>/<key>". Reports
  /// nothing itself. Throws tth::Error naming the evaluator when the pass gave no batch.
  std::map<std::string, double> evaluate();

  /// Runs evaluate() and puts each mean into the current observation.
  void operator()(TorchTrainerHook& hook) override;
  /// Learns the name it is registered under: the prefix from now on.
  void initialize(TorchTrainerHook& hook) override;

  std::string default_name() const override { return options_.name(); }
  TriggerRef default_trigger() const override { return options_.trigger(); }
  int default_priority() const override { return priority::kWriter; }

  /// The prefix of the reported keys: the registered name, or options.name before that.
  const std::string& prefix() const noexcept { return prefix_; }

 private:
  [[noreturn]] static void null_loader();

  template <typename DataLoader>
  static BatchLoop loop_over(std::shared_ptr<DataLoader> loader) {
    if (!loader) null_loader();
    return [loader](const std::function<void(const Batch&)>& visit) {
      for (auto&& batch : *loader) visit(to_batch(batch));
    };
  }

  BatchLoop batches_;
  std::shared_ptr<torch::nn::Module> model_;
  EvalFunction eval_fn_;
  EvaluatorOptions options_;
  std::string prefix_;
};

}  // namespace tth
