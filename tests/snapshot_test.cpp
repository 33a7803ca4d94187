#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>

#include <random>

#include "libtorch_compat.h"
#include "support.h"
#include "test_programs.h"

extern char** environ;

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::files_in;
using test::python;
using test::read_file;
using test::run_command;
using test::same_tensor;
using test::shell_quote;
using test::TempDir;
using test::Training;
using test::write_file;

std::vector<std::string> temp_files_in(const std::string& dir) {
  std::vector<std::string> temps;
  for (const auto& name : files_in(dir)) {
    if (is_temp_file_name(fs::path(name).filename().string())) temps.push_back(name);
  }
  return temps;
}

std::string text_of(const std::string& path) {
  auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// ---- atomic_write ----

TEST(AtomicWrite, CreatesWithTheUmaskModeAndReplaces) {
  TempDir dir;
  const mode_t old_mask = ::umask(022);
  atomic_write(dir / "sub/dir/file", [](const std::string& temp) { write_file(temp, {'a'}); });
  atomic_write(dir / "sub/dir/file", [](const std::string& temp) { write_file(temp, {'b'}); });
  ::umask(old_mask);
  struct stat info {};
  ASSERT_EQ(::stat((dir / "sub/dir/file").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0644u);  // 0666 & ~022, not mkstemp's 0600
  EXPECT_EQ(text_of(dir / "sub/dir/file"), "b");
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{"sub/dir/file"}));
}

TEST(AtomicWrite, AFailingWriterLeavesTheTargetAndNoTemp) {
  TempDir dir;
  atomic_write(dir / "file", [](const std::string& temp) { write_file(temp, {'o', 'k'}); });
  EXPECT_THROW_WITH(atomic_write(dir / "file",
                                 [](const std::string& temp) {
                                   write_file(temp, {'x'});
                                   throw IOError("write", temp, ENOSPC);
                                 }),
                    IOError, "No space left on device");
  EXPECT_EQ(text_of(dir / "file"), "ok");
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{"file"}));
}

TEST(AtomicWrite, AnUnusableDirectoryIsAnIOErrorNamingIt) {
  TempDir dir;
  write_file(dir / "plain", {'x'});
  EXPECT_THROW_WITH(atomic_write(dir / "plain/file", [](const std::string&) {}), IOError,
                    dir / "plain");
}

TEST(AtomicWrite, TempNamesAreRecognisedAndCleaned) {
  TempDir dir;
  EXPECT_TRUE(is_temp_file_name(".snapshot_iter_3.tmp.abcdefghij12"));
  EXPECT_FALSE(is_temp_file_name("snapshot_iter_3"));
  EXPECT_FALSE(is_temp_file_name(".snapshot.tmp.short"));
  EXPECT_FALSE(is_temp_file_name(".x.tmp.ABCDEFGHIJKL"));
  write_file(dir / ".snapshot_iter_3.tmp.abcdefghij12", {'x'});
  write_file(dir / ".keep_me", {'x'});
  EXPECT_EQ(remove_temp_files(dir.path().string()).size(), 1u);
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{".keep_me"}));
  EXPECT_TRUE(remove_temp_files(dir / "missing").empty());
}

// ---- the snapshot extension ----

TEST(Snapshot, FilenameFieldsChainerFieldsAndSubdirectories) {
  TempDir dir;
  Training setup(dir.path().string());
  setup.hook->extend(snapshot(SnapshotOptions().filename(
                         "snaps/ep{epoch}_it{iteration:04d}_{.updater.iteration}")),
                     ExtendOptions().trigger({2, iteration}));
  setup.steps(4);
  EXPECT_EQ(files_in(dir.path().string()),
            (std::vector<std::string>{"snaps/ep0_it0002_2", "snaps/ep1_it0004_4"}));
  EXPECT_EQ(read_snapshot(dir / "snaps/ep1_it0004_4").get_int(kIterationKey), 4);
}

TEST(Snapshot, BadArgumentsFailAtConstruction) {
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("snap_{iteraton}")), Error,
                    "SnapshotOptions: filename must be a template with the fields {iteration}, "
                    "{epoch}, {epoch_detail}, {elapsed_time} (argument not found), got "
                    "'snap_{iteraton}'");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("snap_{iteration")), Error,
                    "SnapshotOptions: filename must be a template");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("")), Error,
                    "SnapshotOptions: filename must not be empty");
  EXPECT_THROW_WITH(
      snapshot(SnapshotOptions().savefun(torch_savefun()).writer(std::make_shared<SimpleWriter>())),
      Error,
      "SnapshotOptions: savefun and writer must not both be set (a writer has its own savefun)");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().n_retains(0)), Error,
                    "SnapshotOptions: n_retains must be >= 1 (or -1 for all), got 0");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("{iteration}/s").autoload(true)), Error,
                    "SnapshotOptions: filename must have fields only in its last component with "
                    "autoload or n_retains, got '{iteration}/s'");
}

TEST(Snapshot, NRetainsKeepsTheNewestByIterationNotByNameOrMtime) {
  TempDir dir;
  // An old snapshot whose mtime is the newest: it must still go first.
  write_file(dir / "s_1", {'x'});
  const struct timespec future[2] = {{::time(nullptr) + 3600, 0}, {::time(nullptr) + 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir / "s_1").c_str(), future, 0), 0);
  Training setup(dir.path().string());
  setup.hook->extend(snapshot(SnapshotOptions().filename("s_{iteration}").n_retains(2)),
                     ExtendOptions().trigger({3, iteration}));
  setup.steps(12);  // s_3 s_6 s_9 s_12: by name s_12 < s_3 < s_6 < s_9
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{"s_12", "s_9"}));
}

TEST(Snapshot, NRetainsNeverDeletesTheNewFileNorFilesFromFurtherAlong) {
  TempDir dir;
  write_file(dir / "s_100", {'x'});  // another run's, or damaged: not ours to judge
  Training setup(dir.path().string());
  setup.hook->extend(snapshot(SnapshotOptions().filename("s_{iteration}").n_retains(1)),
                     ExtendOptions().trigger({2, iteration}));
  setup.steps(4);
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{"s_100", "s_4"}));
}

TEST(Snapshot, ConditionGatesSaves) {
  TempDir dir;
  Training setup(dir.path().string());
  setup.hook->extend(
      snapshot(SnapshotOptions().filename("s_{iteration}").condition([](const TorchTrainerHook& h) {
        return h.iteration() % 2 == 0;
      })),
      ExtendOptions().trigger({1, iteration}));
  setup.steps(4);
  EXPECT_EQ(files_in(dir.path().string()), (std::vector<std::string>{"s_2", "s_4"}));
}

TEST(Snapshot, SnapshotOnErrorSavesTheFailingState) {
  for (bool on : {false, true}) {
    TempDir dir;
    Training setup(dir.path().string());
    setup.hook->extend(snapshot(SnapshotOptions().snapshot_on_error(on)));
    setup.steps(2);
    EXPECT_THROW(setup.hook->run_iteration([] { throw std::runtime_error("nan"); }),
                 std::runtime_error);
    EXPECT_EQ(fs::exists(dir / "snapshot_iter_2"), on);
  }
}

TEST(Snapshot, SavefunErrorsAndAFullDiskKeepThePreviousSnapshot) {
  TempDir dir;
  Training setup(dir.path().string());
  bool fail = false;
  SaveFunction flaky = [&](const std::string& path, const StateDict& state) {
    torch_savefun()(path, state);
    if (fail) throw IOError("write", path, ENOSPC);
  };
  setup.hook->extend(snapshot(SnapshotOptions().savefun(flaky).filename("snap")),
                     ExtendOptions().trigger({1, iteration}));
  setup.step();
  const auto before = read_file(dir / "snap");
  fail = true;
  EXPECT_THROW_WITH(setup.step(), IOError, "No space left on device");
  EXPECT_EQ(read_file(dir / "snap"), before);
  EXPECT_EQ(read_snapshot(dir / "snap").get_int(kIterationKey), 1);
  EXPECT_TRUE(temp_files_in(dir.path().string()).empty());
}

TEST(Snapshot, ARealFullDiskKeepsThePreviousSnapshot) {
  // A 256 KiB tmpfs when we may mount one (root in a namespace that allows it); otherwise the
  // savefun-injected ENOSPC above covers the path.
  TempDir dir;
  const std::string mount = dir / "tmpfs";
  fs::create_directories(mount);
  if (::geteuid() != 0 ||
      run_command("mount -t tmpfs -o size=256k tmpfs " + shell_quote(mount)).exit_code != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here; SavefunErrorsAndAFullDisk... covers ENOSPC";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { run_command("umount " + shell_quote(path)); }
  } unmount{mount};
  Training small(mount, 0, 4);
  small.hook->extend(snapshot(SnapshotOptions().filename("snap")),
                     ExtendOptions().trigger({1, iteration}));
  small.step();
  small.hook->finalize();  // frees the directory for the next run
  const auto before = read_file(mount + "/snap");
  // A model too large for what is left of the tmpfs.
  Training large(mount, 0, 40000);
  large.hook->extend(snapshot(SnapshotOptions().filename("snap")),
                     ExtendOptions().trigger({1, iteration}));
  EXPECT_THROW(large.step(), Error);
  EXPECT_EQ(read_file(mount + "/snap"), before);
  EXPECT_TRUE(temp_files_in(mount).empty());
}

TEST(Snapshot, AutoloadTakesTheNewestThatVerifiesAndNamesSkippedFiles) {
  TempDir dir;
  {
    Training setup(dir.path().string());
    setup.hook->extend(snapshot(), ExtendOptions().trigger({2, iteration}));
    setup.steps(8);  // snapshot_iter_2, 4, 6, 8
  }
  // Tear the newest (a crash mid-write on a file system without atomic rename would), flip a
  // byte in the next, and make the third claim a newer format.
  auto torn = read_file(dir / "snapshot_iter_8");
  torn.resize(torn.size() / 2);
  write_file(dir / "snapshot_iter_8", torn);
  auto flipped = read_file(dir / "snapshot_iter_6");
  flipped[flipped.size() / 3] ^= 0x40;
  write_file(dir / "snapshot_iter_6", flipped);
  StateDict future = read_snapshot(dir / "snapshot_iter_4");
  future.set_int(kFormatVersionKey, kSnapshotFormatVersion + 1);
  torch_savefun()(dir / "snapshot_iter_4", future);

  Training resumed(dir.path().string(), /*seed=*/7);
  auto snap = snapshot(SnapshotOptions().autoload(true));
  resumed.hook->extend(snap, ExtendOptions().trigger({2, iteration}));
  ::testing::internal::CaptureStderr();
  resumed.step();
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(snap->loaded_path());
  EXPECT_EQ(*snap->loaded_path(), dir / "snapshot_iter_2");
  EXPECT_EQ(resumed.hook->iteration(), 3);
  EXPECT_THAT(log, ::testing::HasSubstr("skips '" + (dir / "snapshot_iter_8") + "'"));
  EXPECT_THAT(log, ::testing::HasSubstr("skips '" + (dir / "snapshot_iter_6") + "'"));
  EXPECT_THAT(log,
              ::testing::HasSubstr(fmt::format("format version {}", kSnapshotFormatVersion + 1)));
  EXPECT_THAT(log, ::testing::HasSubstr("resumed from '" + (dir / "snapshot_iter_2") + "'"));
}

TEST(Snapshot, AutoloadWithoutSnapshotsStartsFreshAndCleansTemps) {
  TempDir dir;
  write_file(dir / ".snapshot_iter_3.tmp.abcdefghij12", {'x'});
  Training setup(dir.path().string());
  auto snap = snapshot(SnapshotOptions().autoload(true));
  setup.hook->extend(snap, ExtendOptions().trigger(TriggerRef::never()));
  setup.step();
  EXPECT_FALSE(snap->loaded_path());
  EXPECT_EQ(setup.hook->iteration(), 1);
  EXPECT_TRUE(temp_files_in(dir.path().string()).empty());
}

TEST(Snapshot, AutoloadRefusesASnapshotOfAnotherModel) {
  TempDir dir;
  {
    Training setup(dir.path().string());
    setup.hook->extend(snapshot(), ExtendOptions().trigger({1, iteration}));
    setup.step();
  }
  Training other(dir.path().string(), 0, /*width=*/5);
  other.hook->extend(snapshot(SnapshotOptions().autoload(true)),
                     ExtendOptions().trigger(TriggerRef::never()));
  EXPECT_THROW_WITH(other.step(), StateError,
                    "snapshot autoload: " + (dir / "snapshot_iter_1") +
                        ": key 'models/main/0.weight': holds Float[4, 3] but Float[5, 3] is "
                        "expected");
  EXPECT_THROW_WITH(
      {
        Training again(dir.path().string(), 0, 5);
        again.hook->extend(snapshot(SnapshotOptions().autoload(true)));
        again.step();
      },
      StateError, "key 'models/main/0.weight': holds Float[4, 3] but Float[5, 3] is expected");
}

TEST(SnapshotFile, AFifoOrADirectoryIsAFormatErrorWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ::alarm(20);  // a read that blocks on the FIFO would hang: fail loudly instead
  EXPECT_THROW_WITH(verify_file(fifo), FormatError,
                    "'" + fifo + "' is not a regular file (a FIFO)");
  EXPECT_THROW_WITH(read_snapshot(fifo), FormatError, fifo);
  EXPECT_THROW_WITH(verify_file(dir.path().string()), FormatError, "(a directory)");
  ::alarm(0);
}

TEST(SnapshotFile, ForeignAndDamagedFilesAreFormatErrorsNamingTheFile) {
  TempDir dir;
  write_file(dir / "random", {1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_THROW_WITH(read_snapshot(dir / "random"), FormatError,
                    "'" + (dir / "random") + "' is neither a LibTorch archive nor an npz");
  python(
      "import zipfile, sys\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.writestr('a.txt', 'hi')",
      {dir / "other.zip"});
  EXPECT_EQ(verify_file(dir / "other.zip"), FileFormat::kOther);
  EXPECT_THROW(read_snapshot(dir / "other.zip"), FormatError);
  python("import torch, sys\ntorch.save({'w': torch.ones(3)}, sys.argv[1])", {dir / "py.pt"});
  EXPECT_THROW_WITH(read_snapshot(dir / "py.pt"), FormatError, dir / "py.pt");
  EXPECT_THROW_WITH(read_snapshot(dir / "missing"), IOError, dir / "missing");
}

TEST(SnapshotObject, SavesAndLoadsAModuleAndAnOptimizerWithItsOptions) {
  TempDir dir;
  Training source(dir.path().string());
  source.optimizer->param_groups()[0].options().set_lr(0.123);
  source.hook->extend(snapshot_object(source.model, "model_{iteration}"),
                      ExtendOptions().trigger({4, iteration}));
  auto optimizer_snapshot = snapshot_object(source.optimizer, "optimizer_{iteration}");
  source.hook->extend(optimizer_snapshot, ExtendOptions().trigger(TriggerRef::never()));
  source.steps(4);
  EXPECT_EQ(optimizer_snapshot->save(*source.hook), dir / "optimizer_4");

  Training target(dir.path().string(), /*seed=*/5);
  SnapshotTarget(target.model)
      .load_state_dict(without_metadata(read_snapshot(dir / "model_4")), "test");
  SnapshotTarget(target.optimizer)
      .load_state_dict(without_metadata(read_snapshot(dir / "optimizer_4")), "test");
  for (size_t i = 0; i < source.model->parameters().size(); ++i) {
    EXPECT_TRUE(same_tensor(source.model->parameters()[i], target.model->parameters()[i]));
  }
  EXPECT_DOUBLE_EQ(target.optimizer->param_groups()[0].options().get_lr(), 0.123);
  const at::Tensor p = target.model->parameters()[0];
  const auto& state = static_cast<torch::optim::AdamParamState&>(
      *target.optimizer->state().at(compat::optimizer_state_key(p)));
  EXPECT_EQ(state.step(), 4);
  EXPECT_THROW_WITH(SnapshotTarget(Training(dir.path().string(), 0, 5).model)
                        .load_state_dict(without_metadata(read_snapshot(dir / "model_4")), "file"),
                    StateError, "key '0.weight'");
}

TEST(TrainingState, OptimizerOptionsSchedulerAndRngSurviveARoundTrip) {
  TempDir dir;
  Training source(dir.path().string());
  auto scheduler = std::make_shared<torch::optim::StepLR>(*source.optimizer, 2, 0.5);
  source.hook->add_scheduler("main", scheduler);
  for (int i = 0; i < 5; ++i) {
    source.step();
    scheduler->step();
  }
  const double lr = source.optimizer->param_groups()[0].options().get_lr();
  EXPECT_DOUBLE_EQ(lr, 0.01 * 0.25);
  snapshot(SnapshotOptions().filename("s"))->save(*source.hook);
  const auto after_save = torch::rand({3});

  Training target(dir.path().string(), 9);
  auto target_scheduler = std::make_shared<torch::optim::StepLR>(*target.optimizer, 2, 0.5);
  target.hook->add_scheduler("main", target_scheduler);
  target.hook->load_state_dict(without_metadata(read_snapshot(dir / "s")));
  EXPECT_DOUBLE_EQ(target.optimizer->param_groups()[0].options().get_lr(), lr);
  EXPECT_TRUE(same_tensor(torch::rand({3}), after_save));  // the RNG continues
  // StepLR halves when its count before the step is a multiple of 2: after 5 steps, the 7th.
  target_scheduler->step();
  EXPECT_DOUBLE_EQ(target.optimizer->param_groups()[0].options().get_lr(), lr);
  target_scheduler->step();
  EXPECT_DOUBLE_EQ(target.optimizer->param_groups()[0].options().get_lr(), lr * 0.5);
  EXPECT_EQ(target.hook->iteration(), 5);
}

TEST(TrainingState, OptimizerStateMismatchesAreRejected) {
  TempDir dir;
  Training source(dir.path().string() + "/source");
  source.steps(2);
  StateDict state = source.hook->state_dict();
  Training target(dir.path().string() + "/target");
  StateDict bad = state;
  bad.set("optimizers/main/state/0/0/exp_avg", torch::zeros({2, 2}));
  EXPECT_THROW_WITH(target.hook->load_state_dict(bad), StateError,
                    "TorchTrainerHook::load_state_dict: key 'optimizers/main/state/0/0/exp_avg': "
                    "holds Float[2, 2] but Float[4, 3] is expected");
  bad = state;
  bad.set_int("optimizers/main/state/0/9/step", 1);
  EXPECT_THROW_WITH(target.hook->load_state_dict(bad), StateError,
                    "key 'optimizers/main/state/0/9/step': is not expected: another optimizer "
                    "type, or more parameter groups or parameters");
  bad = state;
  bad.set_int("optimizers/ghost/param_groups/0/lr", 1);
  EXPECT_THROW_WITH(target.hook->load_state_dict(bad), StateError,
                    "key 'optimizers/ghost/param_groups/0/lr': is not expected: nothing "
                    "registered here saves 'optimizers/ghost'");
  bad = state;
  bad.erase("optimizers/main/state/0/0/step");  // exp_avg without its step: incomplete
  EXPECT_THROW_WITH(target.hook->load_state_dict(bad), StateError,
                    "key 'optimizers/main/state/0/0/step': is missing from the loaded state");
  // Before the first step an optimizer has no per-parameter state: loading that is fine,
  // and replaces the state the target had.
  target.steps(1);
  ASSERT_FALSE(target.optimizer->state().empty());
  Training fresh(dir.path().string() + "/fresh");
  target.hook->load_state_dict(fresh.hook->state_dict());
  EXPECT_TRUE(target.optimizer->state().empty());
}

TEST(TrainingState, NonStrictLoadKeepsOptimizerStatePerParameter) {
  TempDir dir;
  Training source(dir.path().string() + "/source", 1);
  source.steps(2);
  Training target(dir.path().string() + "/target", 2);
  target.steps(3);
  StateDict state = source.hook->state_dict();
  // Drop the state of the first parameter only: it keeps its own, the others are loaded.
  for (const char* field : {"step", "exp_avg", "exp_avg_sq"}) {
    ASSERT_TRUE(state.erase(std::string("optimizers/main/state/0/0/") + field)) << field;
  }
  const StateDict target_state = target.hook->state_dict();
  const at::Tensor kept = target_state.tensor("optimizers/main/state/0/0/exp_avg").clone();
  test::CapturedWarnings warnings;
  const IncompatibleKeys left_out = target.hook->load_state_dict(state, /*strict=*/false);
  const StateDict after = target.hook->state_dict();
  EXPECT_TRUE(same_tensor(after.tensor("optimizers/main/state/0/0/exp_avg"), kept));
  EXPECT_EQ(after.get_int("optimizers/main/state/0/0/step"), 3);
  EXPECT_TRUE(same_tensor(after.tensor("optimizers/main/state/0/1/exp_avg"),
                          state.tensor("optimizers/main/state/0/1/exp_avg")));
  EXPECT_EQ(after.get_int("optimizers/main/state/0/1/step"), 2);
  EXPECT_EQ(left_out.missing_keys,
            (std::vector<std::string>{"optimizers/main/state/0/0/step",
                                      "optimizers/main/state/0/0/exp_avg",
                                      "optimizers/main/state/0/0/exp_avg_sq"}));
  EXPECT_TRUE(left_out.unexpected_keys.empty());
  EXPECT_TRUE(warnings.contains("non-strict load kept the current values of 3 missing key(s)"));
  // Strict, the same state says the first parameter never stepped: its state goes.
  target.hook->load_state_dict(state);
  EXPECT_FALSE(target.hook->state_dict().contains("optimizers/main/state/0/0/exp_avg"));
}

TEST(TrainingState, AParameterStateCountsOnlyWithThisOptimizersFields) {
  TempDir dir;
  Training adam(dir.path().string() + "/adam", 1);
  adam.steps(2);
  // SGD with momentum: its state is a momentum buffer per parameter.
  torch::manual_seed(1);
  torch::nn::Sequential model(torch::nn::Linear(3, 4), torch::nn::Linear(4, 2));
  auto sgd = std::make_shared<torch::optim::SGD>(model->parameters(),
                                                 torch::optim::SGDOptions(0.1).momentum(0.9));
  TorchTrainerHook hook{HookOptions(4).out(dir.path().string() + "/sgd")};
  hook.add_model("main", model);
  hook.add_optimizer("main", sgd);
  hook.run_iteration([&] {
    sgd->zero_grad();
    model->forward(torch::randn({5, 3})).pow(2).mean().backward();
    sgd->step();
  });
  // The SGD hook's own state with Adam's per-parameter state in place of SGD's.
  StateDict adam_state;
  for (const auto& [key, value] : hook.state_dict()) {
    if (key.rfind("optimizers/main/state/", 0) != 0) adam_state.set(key, value);
  }
  size_t adam_keys = 0;
  for (const auto& [key, value] : adam.hook->state_dict()) {
    if (key.rfind("optimizers/main/state/", 0) != 0) continue;
    adam_state.set(key, value);
    ++adam_keys;
  }
  const at::Tensor buffer =
      hook.state_dict().tensor("optimizers/main/state/0/0/momentum_buffer").clone();
  // Adam's fields are not SGD's: strict, they are unexpected; non-strict, ignored, and the
  // momentum buffers are kept (not replaced by empty SGD states).
  EXPECT_THROW_WITH(hook.load_state_dict(adam_state), StateError,
                    "key 'optimizers/main/state/0/0/step': is not expected: another optimizer "
                    "type");
  test::CapturedWarnings warnings;
  const IncompatibleKeys left_out = hook.load_state_dict(adam_state, /*strict=*/false);
  EXPECT_TRUE(
      same_tensor(hook.state_dict().tensor("optimizers/main/state/0/0/momentum_buffer"), buffer));
  EXPECT_EQ(left_out.unexpected_keys.size(), adam_keys);
  EXPECT_EQ(left_out.missing_keys.size(), 4u);  // the 4 momentum buffers, kept
  EXPECT_NO_THROW(hook.run_iteration([&] {      // the optimizer still steps
    sgd->zero_grad();
    model->forward(torch::randn({5, 3})).pow(2).mean().backward();
    sgd->step();
  }));

  // Adam's step without its moments is incomplete, strict or not.
  StateDict partial = adam.hook->state_dict();
  partial.erase("optimizers/main/state/0/0/exp_avg");
  EXPECT_THROW_WITH(adam.hook->load_state_dict(partial, /*strict=*/false), StateError,
                    "key 'optimizers/main/state/0/0/exp_avg': is missing from the loaded state");
}

TEST(TrainingState, AFailingExtensionLoadLeavesModelsAndOptimizersUntouched) {
  struct Fragile : Extension {
    StateDict state_dict() const override {
      StateDict state;
      state.set_int("x", 0);
      return state;
    }
    void load_state_dict(const StateDict& state) override {
      if (state.get_int("x") == 1) throw std::runtime_error("cannot take x = 1");
    }
  };
  TempDir dir;
  Training source(dir.path().string() + "/source", 1);
  source.hook->extend(std::make_shared<Fragile>(), "fragile");
  source.steps(3);
  Training target(dir.path().string() + "/target", 2);
  target.hook->extend(std::make_shared<Fragile>(), "fragile");
  target.steps(1);
  StateDict before;
  for (const auto& [key, value] : target.hook->state_dict()) {
    const auto* tensor = std::get_if<at::Tensor>(&value);
    before.set(key, tensor != nullptr ? StateValue(tensor->clone()) : value);
  }
  StateDict state = source.hook->state_dict();
  state.set_int("extensions/fragile/x", 1);
  EXPECT_THROW_WITH(target.hook->load_state_dict(std::move(state)), std::runtime_error,
                    "cannot take x = 1");
  const StateDict after = target.hook->state_dict();
  for (const auto& [key, value] : before) {
    if (key == "manager/elapsed_time") continue;
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      EXPECT_TRUE(same_tensor(after.tensor(key), *tensor)) << key;
    }
  }
  EXPECT_EQ(after.size(), before.size());
}

// ---- interop with Python and the command-line tool ----

TEST(Interop, PythonTorchJitLoadReadsAModuleSnapshot) {
  TempDir dir;
  Training setup(dir.path().string());
  setup.steps(3);
  snapshot_object(setup.model, "model.pt")->save(*setup.hook);
  snapshot(SnapshotOptions().filename("all.pt"))->save(*setup.hook);
  const std::string out = python(R"(
import sys, torch
m = torch.jit.load(sys.argv[1])
for name, value in sorted(m.named_parameters()):
    print(name, value.detach().numpy().tobytes().hex())
full = torch.jit.load(sys.argv[2])
params = dict(full.named_parameters())
print('iteration', getattr(full, 'manager/iteration').item(),
      'version', getattr(full, 'tth/format_version').item())
print('adam', 'optimizers/main/state/0/0/exp_avg' in params)
)",
                                 {dir / "model.pt", dir / "all.pt"});
  for (const auto& item : setup.model->named_parameters()) {
    const auto value = item.value().contiguous();
    std::string hex;
    const auto* bytes = static_cast<const uint8_t*>(value.data_ptr());
    for (int64_t i = 0; i < value.numel() * value.element_size(); ++i) {
      hex += fmt::format("{:02x}", bytes[i]);
    }
    EXPECT_THAT(out, ::testing::HasSubstr(item.key() + " " + hex + "\n"));
  }
  EXPECT_THAT(out,
              ::testing::HasSubstr(fmt::format("iteration 3 version {}", kSnapshotFormatVersion)));
  EXPECT_THAT(out, ::testing::HasSubstr("adam True"));
}

TEST(Tool, InspectListsKeysAndVerifyNamesTheFirstProblem) {
  TempDir dir;
  Training setup(dir.path().string());
  setup.hook->extend(snapshot(SnapshotOptions().filename("s")),
                     ExtendOptions().trigger({1, iteration}));
  setup.step();
  const auto inspect = run_command(std::string(TTH_TOOL) + " inspect " + shell_quote(dir / "s"));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_THAT(inspect.output,
              ::testing::HasSubstr("format: TorchTrainerHook snapshot (LibTorch archive)\n"));
  EXPECT_THAT(inspect.output,
              ::testing::HasSubstr(fmt::format("version: {}", kSnapshotFormatVersion)));
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("iteration: 1"));
  EXPECT_THAT(inspect.output,
              ::testing::ContainsRegex("models/main/0.weight +Float +\\(4, 3\\) +48"));
  auto bytes = read_file(dir / "s");
  bytes[bytes.size() / 2] ^= 1;
  write_file(dir / "bad", bytes);
  const auto verify = run_command(std::string(TTH_TOOL) + " verify " + shell_quote(dir / "s") +
                                  " " + shell_quote(dir / "bad"));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_THAT(verify.output,
              ::testing::HasSubstr("ok " + (dir / "s") +
                                   " (TorchTrainerHook snapshot (LibTorch archive))"));
  EXPECT_THAT(verify.output, ::testing::HasSubstr("FAILED " + (dir / "bad")));
  EXPECT_EQ(run_command(std::string(TTH_TOOL) + " frobnicate x").exit_code, 2);
}

// ---- resume in a fresh process, and crashes ----

std::string child(const std::string& args) {
  const auto result = run_command(std::string(TTH_SNAPSHOT_CHILD) + " " + args);
  EXPECT_EQ(result.exit_code, 0) << args << "\n" << result.output;
  return result.output;
}

void expect_bit_exact_resume(const std::string& optimizer, const std::string& savefun = "torch") {
  TempDir dir;
  const std::string common =
      " --optimizer " + optimizer + " --iterations 20 --snapshot-at 8 --savefun " + savefun;
  child("train --out " + shell_quote(dir / "straight") + " --result " +
        shell_quote(dir / "straight.pt") + common);
  child("train --out " + shell_quote(dir / "resumed") + " --result " +
        shell_quote(dir / "first.pt") + common + " --stop-at 8");
  const std::string log = child("train --out " + shell_quote(dir / "resumed") + " --result " +
                                shell_quote(dir / "second.pt") + common);
  EXPECT_THAT(log, ::testing::HasSubstr("resumed from"));
  const StateDict straight = torch_loadfun()(dir / "straight.pt");
  const StateDict first = torch_loadfun()(dir / "first.pt");
  const StateDict second = torch_loadfun()(dir / "second.pt");
  const auto losses = straight.tensor("losses");
  ASSERT_EQ(losses.numel(), 20);
  EXPECT_TRUE(same_tensor(first.tensor("losses"), losses.slice(0, 0, 8)));
  EXPECT_TRUE(same_tensor(second.tensor("losses"), losses.slice(0, 8, 20)));
  size_t compared = 0;
  for (const auto& [key, value] : straight) {
    if (key == "losses") continue;
    ASSERT_TRUE(second.contains(key)) << key;
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      EXPECT_TRUE(same_tensor(second.tensor(key), *tensor)) << key;
      ++compared;
    }
  }
  EXPECT_GT(compared, 20u);
  EXPECT_TRUE(second.contains("optimizers/main/param_groups/0/lr"));
  EXPECT_TRUE(second.contains("state/sampler/indices"));
}

TEST(Resume, BitExactWithAdamInAFreshProcess) { expect_bit_exact_resume("adam"); }
TEST(Resume, BitExactWithSgdMomentumInAFreshProcess) { expect_bit_exact_resume("sgd"); }
TEST(Resume, BitExactFromAnNpzSnapshot) {
  expect_bit_exact_resume("adam", "npz");
  expect_bit_exact_resume("sgd", "npz");
}

// Starts `snapshot_child crash-loop`, waits until it reports `ready_lines` snapshots, then
// SIGKILLs it after a random delay.
void run_and_kill(const std::string& out, const std::string& writer, std::mt19937& random) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::vector<std::string> args = {TTH_SNAPSHOT_CHILD, "crash-loop", "--out", out,
                                   "--writer",         writer};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  FILE* output = ::fdopen(pipe_fds[0], "r");
  char line[256];
  ASSERT_NE(std::fgets(line, sizeof line, output), nullptr) << "the child did not start";
  std::this_thread::sleep_for(
      std::chrono::microseconds(std::uniform_int_distribution<int>(0, 150000)(random)));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(output);
  EXPECT_TRUE(WIFSIGNALED(status));
}

// Kills a training that snapshots every iteration with `writer` at random moments, then
// checks that every snapshot file verifies and that the next start resumes and cleans up.
void expect_kills_leave_no_torn_snapshot(const std::string& writer) {
  const char* env = std::getenv("TTH_CRASH_KILLS");
  const int kills = env ? std::atoi(env) : 6;
  TempDir dir;
  const std::string out = dir / "out";
  std::mt19937 random(12345);
  int temps_seen = 0;
  for (int kill = 0; kill < kills; ++kill) {
    run_and_kill(out, writer, random);
    temps_seen += static_cast<int>(temp_files_in(out).size());
    for (const auto& name : files_in(out)) {
      if (is_temp_file_name(fs::path(name).filename().string())) continue;
      EXPECT_NO_THROW(read_snapshot(out + "/" + name)) << "after kill " << kill << ": " << name;
    }
  }
  const std::string log = child("start --out " + shell_quote(out) + " --writer " + writer);
  EXPECT_THAT(log, ::testing::HasSubstr("resumed from"));
  EXPECT_TRUE(temp_files_in(out).empty());
  std::cout << writer << " writer: kills: " << kills << ", temp files left by kills: " << temps_seen
            << '\n';
}

TEST(SnapshotCrash, KilledWritersNeverLeaveATornSnapshot) {
  expect_kills_leave_no_torn_snapshot("simple");
}
TEST(SnapshotCrash, KilledThreadWriterNeverLeavesATornSnapshot) {
  expect_kills_leave_no_torn_snapshot("thread");
}
TEST(SnapshotCrash, KilledQueueWriterNeverLeavesATornSnapshot) {
  expect_kills_leave_no_torn_snapshot("queue");
}

}  // namespace
}  // namespace tth

// ---- verification in bounded memory, and file names that read back ----

#include <limits.h>  // NAME_MAX
#include <unistd.h>  // pathconf

#include <regex>

namespace tth {
namespace {

using test::CapturedWarnings;

constexpr int64_t kMiB = int64_t{1} << 20;

// Prints the hex of numpy's .npy v1.0 header of a uint8 array of int(sys.argv[1]) elements.
constexpr char kNpyHeaderHex[] = R"(
import io, sys
import numpy as np
header = io.BytesIO()
np.lib.format.write_array_header_1_0(
    header, {'descr': '|u1', 'fortran_order': False, 'shape': (int(sys.argv[1]),)})
print(header.getvalue().hex(), end='')
)";

// Sets the uncompressed size that the central directory of zip sys.argv[1] declares for member
// sys.argv[2] to int(sys.argv[3]), with zipfile's own record layout; prints the member's
// compressed size.
constexpr char kDeclareSize[] = R"(
import struct, sys, zipfile
path, member, size = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
data = bytearray(open(path, 'rb').read())
at = data.find(zipfile.stringCentralDir)
while True:
    record = list(struct.unpack(zipfile.structCentralDir, data[at:at + zipfile.sizeCentralDir]))
    start = at + zipfile.sizeCentralDir
    if data[start:start + record[zipfile._CD_FILENAME_LENGTH]] == member:
        break
    at = data.find(zipfile.stringCentralDir, at + 1)
    assert at >= 0, 'no such member'
record[zipfile._CD_UNCOMPRESSED_SIZE] = size
data[at:at + zipfile.sizeCentralDir] = struct.pack(zipfile.structCentralDir, *record)
open(path, 'wb').write(data)
print(record[zipfile._CD_COMPRESSED_SIZE], end='')
)";

// Runs the command sys.argv[1:], prints its output, then "exit <code> peak_kib <n>": the
// child's own peak resident memory, from wait4. (A child of the test process would count the
// test's memory too, since exec records the memory of the process it replaces; a child of
// Python starts from the interpreter's few MiB.)
constexpr char kPeakMemory[] = R"(
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
output = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
sys.stdout.write(output.decode(errors='replace'))
print('exit', child.returncode, 'peak_kib', usage.ru_maxrss)
)";

struct MeasuredRun {
  int exit_code = -1;
  std::string output;
  int64_t peak_bytes = 0;
};

// `tth <args>`, with its peak resident memory.
MeasuredRun run_tool_measured(const std::vector<std::string>& args) {
  std::vector<std::string> command = {TTH_TOOL};
  command.insert(command.end(), args.begin(), args.end());
  MeasuredRun run;
  run.output = python(kPeakMemory, command);
  static const std::regex kTail(R"(exit (-?[0-9]+) peak_kib ([0-9]+)\s*$)");
  std::smatch match;
  if (!std::regex_search(run.output, match, kTail)) {
    ADD_FAILURE() << "no measurement in:\n" << run.output;
    return run;
  }
  run.exit_code = std::stoi(match[1].str());
  run.peak_bytes = std::stoll(match[2].str()) * 1024;
  return run;
}

// A whole-state npz snapshot of `setup` at `path`.
void save_npz(Training& setup, const std::string& name, NpzOptions options = NpzOptions()) {
  snapshot(SnapshotOptions().savefun(npz_savefun(options)).filename(name))->save(*setup.hook);
}

TEST(SnapshotFile, VerifyingADeflateBombUsesBoundedMemory) {
  // An npz snapshot with one more array: 1 GiB of zeros in about 1 MB, near the most deflate
  // can compress. Verifying streams every member's CRC-32; it must not load the array.
  constexpr int64_t kBombSize = int64_t{1} << 30;
  constexpr int64_t kLimit = 64 * kMiB;
  TempDir dir;
  Training setup(dir.path().string());
  setup.step();
  save_npz(setup, "small.npz");
  fs::copy_file(dir / "small.npz", dir / "bomb.npz");
  const std::string header = python(kNpyHeaderHex, {std::to_string(kBombSize)});
  python(test::kAppendZeros, {dir / "bomb.npz", "bomb.npy", header, std::to_string(kBombSize)});
  ASSERT_LT(static_cast<int64_t>(fs::file_size(dir / "bomb.npz")), 2 * kMiB);

  const MeasuredRun small = run_tool_measured({"verify", dir / "small.npz"});
  ASSERT_EQ(small.exit_code, 0) << small.output;
  const MeasuredRun bomb = run_tool_measured({"verify", dir / "bomb.npz"});
  EXPECT_EQ(bomb.exit_code, 0) << bomb.output;
  EXPECT_THAT(bomb.output, ::testing::HasSubstr("ok " + (dir / "bomb.npz")));
  EXPECT_LT(bomb.peak_bytes, small.peak_bytes + kLimit)
      << "tth verify of a " << kBombSize << "-byte array held in "
      << fs::file_size(dir / "bomb.npz") << " bytes";
  std::cout << "tth verify peak memory: " << small.peak_bytes / kMiB << " MiB for the snapshot, "
            << bomb.peak_bytes / kMiB << " MiB with a 1 GiB deflate bomb added\n";
}

TEST(SnapshotFile, AMemberLyingAboutItsSizeIsAFormatErrorNamingIt) {
  TempDir dir;
  Training setup(dir.path().string());
  setup.step();
  save_npz(setup, "good.npz", NpzOptions().compression(NpzCompression::kDeflate));
  const std::string member = "models/main/0.weight.npy";  // Float[4, 3]: 48 bytes of data

  // More than deflate can make of the member's bytes: refused when the file is indexed,
  // before any member is read or anything is allocated for it.
  const std::string impossible = dir / "impossible.npz";
  fs::copy_file(dir / "good.npz", impossible);
  const std::string compressed = python(kDeclareSize, {impossible, member, "4294967280"});
  const std::string refusal = "file '" + impossible + "': member '" + member +
                              "': uncompressed size 4294967280 is impossible for " + compressed +
                              " deflated bytes";
  EXPECT_THROW_WITH(verify_file(impossible), FormatError, refusal);
  EXPECT_THROW_WITH(read_snapshot(impossible), FormatError, refusal);
  EXPECT_THROW_WITH(read_npz(impossible), FormatError, refusal);
  const auto tool = run_command(std::string(TTH_TOOL) + " verify " + shell_quote(impossible));
  EXPECT_EQ(tool.exit_code, 1) << tool.output;
  EXPECT_THAT(tool.output, ::testing::HasSubstr("FAILED " + impossible));
  EXPECT_THAT(tool.output, ::testing::HasSubstr(refusal));

  // A size deflate could produce, but not what the member holds: the CRC pass finds the
  // shortfall, and loading compares the array's header with the declared size before it
  // allocates the array.
  const std::string plausible = dir / "plausible.npz";
  fs::copy_file(dir / "good.npz", plausible);
  const std::string declared = std::to_string(100 * std::stoll(compressed));
  python(kDeclareSize, {plausible, member, declared});
  EXPECT_THROW_WITH(verify_file(plausible), FormatError, "member '" + member + "': data has ");
  EXPECT_THROW_WITH(read_snapshot(plausible), FormatError,
                    ", the central directory says " + declared);
  EXPECT_THROW_WITH(read_npz(plausible), FormatError,
                    "file '" + plausible + "': member '" + member +
                        "': the header declares 48 data bytes, the member holds ");
}

// ---- file-name templates ----

// A template, the iterations at which the test saves, and the names n_retains(2) keeps (empty
// for elapsed_time, whose values are read from the names saved), beside a file whose name looks
// like the template's but is not one it renders: never listed, loaded nor deleted.
struct TemplateCase {
  std::string filename;
  std::vector<int> saves;
  std::vector<std::string> kept;
  std::string foreign;
};

void expect_template_round_trips(const TemplateCase& c) {
  SCOPED_TRACE(c.filename);
  TempDir dir;
  write_file(dir / c.foreign, {'x'});
  std::vector<std::string> saved;  // distinct names, in order
  {
    Training setup(dir.path().string());
    auto snap = snapshot(SnapshotOptions().filename(c.filename).n_retains(2));
    setup.hook->extend(snap, ExtendOptions().trigger(TriggerRef::never()));
    for (int iteration = 1; iteration <= c.saves.back(); ++iteration) {
      setup.step();
      if (std::find(c.saves.begin(), c.saves.end(), iteration) == c.saves.end()) continue;
      const std::string name = fs::path(snap->save(*setup.hook)).filename().string();
      if (saved.empty() || saved.back() != name) saved.push_back(name);
    }
  }
  ASSERT_GE(saved.size(), 3u);
  const std::vector<std::string> kept(saved.end() - 2, saved.end());
  if (!c.kept.empty()) EXPECT_EQ(kept, c.kept);
  std::vector<std::string> expected = kept;
  expected.push_back(c.foreign);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(files_in(dir.path().string()), expected);

  Training resumed(dir.path().string(), /*seed=*/1);
  auto snap = snapshot(SnapshotOptions().filename(c.filename).autoload(true));
  resumed.hook->extend(snap, ExtendOptions().trigger(TriggerRef::never()));
  CapturedWarnings warnings;
  resumed.step();
  ASSERT_TRUE(snap->loaded_path());
  EXPECT_EQ(*snap->loaded_path(), dir / kept.back());
  EXPECT_EQ(resumed.hook->iteration(), c.saves.back() + 1);
  EXPECT_FALSE(warnings.contains(c.foreign)) << "the foreign file was tried";
  EXPECT_TRUE(fs::exists(dir / c.foreign));
}

TEST(SnapshotFilename, EveryAcceptedSpecWritesListsRetainsAndAutoloads) {
  // Four iterations per epoch. Iterations and epochs cross a digit boundary (9 -> 12, 9 -> 11),
  // where ordering by name would go wrong.
  const std::vector<int> by_iteration = {3, 6, 9, 12};
  const std::vector<int> by_epoch = {4, 8, 36, 40, 44};
  const std::vector<TemplateCase> cases = {
      {"s_{iteration}", by_iteration, {"s_9", "s_12"}, "s_9e9"},
      {"s_{iteration:d}", by_iteration, {"s_9", "s_12"}, "s_012"},
      {"s_{iteration:01d}", by_iteration, {"s_9", "s_12"}, "s_+13"},
      {"s_{iteration:04d}", by_iteration, {"s_0009", "s_0012"}, "s_99"},
      {"s_{iteration:08d}.pt", by_iteration, {"s_00000009.pt", "s_00000012.pt"}, "s_13.pt"},
      {"snapshot_iter_{.updater.iteration:02d}",
       by_iteration,
       {"snapshot_iter_09", "snapshot_iter_12"},
       "snapshot_iter_7"},
      {"e{epoch}_i{iteration:03d}", by_iteration, {"e2_i009", "e3_i012"}, "e3_i13"},
      {"e_{epoch}", by_epoch, {"e_10", "e_11"}, "e_012"},
      {"e_{epoch:d}", by_epoch, {"e_10", "e_11"}, "e_1e3"},
      {"e_{.updater.epoch:03d}", by_epoch, {"e_010", "e_011"}, "e_12"},
      {"e_{epoch}.{iteration}", by_epoch, {"e_10.40", "e_11.44"}, "e_12.0048"},
      {"d_{epoch_detail}", by_iteration, {"d_2.25", "d_3"}, "d_9.50"},
      {"d_{epoch_detail:.1f}", by_iteration, {"d_2.2", "d_3.0"}, "d_9.5e0"},
      {"d_{epoch_detail:.2f}", by_iteration, {"d_2.25", "d_3.00"}, "d_9.5"},
      {"d_{epoch_detail:.0f}", by_iteration, {"d_2", "d_3"}, "d_09"},
      {"t_{elapsed_time}", by_iteration, {}, "t_99.0"},
      {"t_{elapsed_time:.6f}", by_iteration, {}, "t_99.5"},
  };
  for (const TemplateCase& c : cases) expect_template_round_trips(c);
}

TEST(SnapshotFilename, SpecsWhoseNamesDoNotReadBackFailAtConstruction) {
  const std::vector<std::string> refused = {
      "s_{iteration:5}",       "s_{iteration:5d}",
      "s_{iteration:x}",       "s_{iteration:X}",
      "s_{iteration:o}",       "s_{iteration:b}",
      "s_{iteration:c}",       "s_{iteration:#x}",
      "s_{iteration:#d}",      "s_{iteration:+d}",
      "s_{iteration: d}",      "s_{iteration:-d}",
      "s_{iteration:<5}",      "s_{iteration:>5d}",
      "s_{iteration:*^8d}",    "s_{iteration:0>4}",
      "s_{iteration:04}",      "s_{iteration:00d}",
      "s_{iteration:004d}",    "s_{iteration:Ld}",
      "s_{iteration:{}}",      "s_{epoch:3}",
      "s_{epoch:x}",           "s_{epoch:+}",
      "d_{epoch_detail:e}",    "d_{epoch_detail:E}",
      "d_{epoch_detail:g}",    "d_{epoch_detail:G}",
      "d_{epoch_detail:a}",    "d_{epoch_detail:f}",
      "d_{epoch_detail:F}",    "d_{epoch_detail:.2}",
      "d_{epoch_detail:.2e}",  "d_{epoch_detail:.2g}",
      "d_{epoch_detail:8.2f}", "d_{epoch_detail:08.2f}",
      "d_{epoch_detail:+.2f}", "d_{epoch_detail:#.0f}",
      "d_{epoch_detail:.02f}", "d_{epoch_detail:L}",
      "t_{elapsed_time:.3g}",  "t_{elapsed_time:10}",
      "t_{elapsed_time:<}",    "snapshot_iter_{.updater.iteration:5}",
  };
  for (const std::string& filename : refused) {
    SCOPED_TRACE(filename);
    const std::string message =
        "SnapshotOptions: filename must format {iteration} and {epoch} with no spec, 'd' or a "
        "zero-padded width such as '08d', and {epoch_detail} and {elapsed_time} with no spec "
        "or a precision such as '.2f', so that names read back, got '" +
        filename + "'";
    EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename(filename)), Error, message);
    EXPECT_THROW_WITH(snapshot_object(torch::nn::Linear(1, 1), filename), Error, message);
  }
  // Fields that the names cannot tell apart.
  for (const std::string& filename :
       {"s_{iteration}{epoch}", "s_{iteration}0{epoch}", "s_{epoch_detail}.{iteration}",
        "s_{elapsed_time}e{iteration}", "s_{epoch_detail:.1f}.{epoch}"}) {
    EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename(filename)), Error,
                      "SnapshotOptions: filename must separate two fields by a character that "
                      "neither prints, such as '_', got '" +
                          std::string(filename) + "'");
  }
  EXPECT_NO_THROW(snapshot(SnapshotOptions().filename("s_{epoch_detail:.1f}e{iteration}")));
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("s_{}")), Error,
                    "SnapshotOptions: filename must name its fields: {iteration}, {epoch}, "
                    "{epoch_detail}, {elapsed_time}, got 's_{}'");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("s_{0:04d}")), Error,
                    "filename must name its fields");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("s_{epoch_detail:.1f}_{epoch_detail}")),
                    Error,
                    "filename must render names that read back as the values they were "
                    "made from");
}

TEST(SnapshotFilename, NamesThatCouldExceedNameMaxFailAtConstruction) {
  TempDir dir;
  if (::pathconf(dir.path().c_str(), _PC_NAME_MAX) != NAME_MAX) {
    GTEST_SKIP() << "the temp directory's file system does not allow NAME_MAX bytes";
  }
  // At iteration 10^18 {iteration} prints 19 digits: the longest accepted last component
  // leaves exactly the room atomic_write's temp name needs.
  std::size_t longest = 0;
  for (std::size_t prefix = 150; prefix < NAME_MAX; ++prefix) {
    try {
      snapshot(SnapshotOptions().filename(std::string(prefix, 'x') + "{iteration}"));
      longest = prefix + 19;
    } catch (const Error& error) {
      EXPECT_THAT(error.what(), ::testing::HasSubstr(
                                    "SnapshotOptions: filename must render components of at most "
                                    "NAME_MAX (255) bytes, the last at most "));
      break;
    }
  }
  ASSERT_GT(longest, 0u);
  EXPECT_NO_THROW(atomic_write(dir / std::string(longest, 'a'),
                               [](const std::string& temp) { write_file(temp, {'x'}); }));
  EXPECT_THROW_WITH(atomic_write(dir / std::string(longest + 1, 'b'),
                                 [](const std::string& temp) { write_file(temp, {'x'}); }),
                    IOError, "File name too long");
  // A width, a precision, and a directory component count too.
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("s_{iteration:0240d}")), Error, "NAME_MAX");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("s_{epoch_detail:.230f}")), Error,
                    "NAME_MAX");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename(std::string(NAME_MAX + 1, 'd') + "/s")),
                    Error, "NAME_MAX");
  EXPECT_NO_THROW(snapshot(SnapshotOptions().filename(std::string(NAME_MAX, 'd') + "/s")));
}

}  // namespace
}  // namespace tth

// ---- keep_best: retention by a reported value beside retention by progress ----

#include <thread>

#include "container/zip_reader.h"
#include "text_util.h"

namespace tth {
namespace {

using Files = std::vector<std::string>;
using test::CapturedWarnings;
using test::TempDir;
using test::Training;

constexpr char kAccuracy[] = "validation/main/accuracy";

// One iteration of `setup` that reports `value` under `key` (nothing for nullopt).
void step_reporting(Training& setup, std::optional<double> value,
                    const std::string& key = kAccuracy) {
  setup.hook->run_iteration([&] {
    if (value) report(key, *value);
  });
}

// A snapshot "s_{iteration}" of every iteration, with `retains` and `best`.
void extend_keep_best(Training& setup, int retains, const KeepBestOptions& best,
                      SnapshotOptions options = SnapshotOptions()) {
  setup.hook->extend(snapshot(options.filename("s_{iteration}").n_retains(retains).keep_best(best)),
                     ExtendOptions().trigger({1, iteration}));
}

// Runs `values` (one per iteration) and checks the files left after each snapshot.
void expect_files_after_each(Training& setup, const TempDir& dir,
                             const std::vector<std::optional<double>>& values,
                             const std::vector<Files>& expected) {
  ASSERT_EQ(values.size(), expected.size());
  for (size_t i = 0; i < values.size(); ++i) {
    step_reporting(setup, values[i]);
    EXPECT_EQ(files_in(dir.path().string()), expected[i]) << "after iteration " << i + 1;
  }
}

// The metric written into a snapshot by the first run of the tests below.
double metric_in(const std::string& path) {
  return read_snapshot_metadata(path).get_double(kRetentionMetricKey);
}

// Flips the last byte of the largest member that holds state, not metadata (tensor data of a
// LibTorch archive, or an array of an npz file; both stored, so the byte is the value's).
void flip_a_state_byte(const std::string& path) {
  const container::ZipEntry* largest = nullptr;
  const container::ZipReader reader(path);
  for (const auto& entry : reader.entries()) {
    const bool state = entry.name.find("/data/") != std::string::npos ||
                       (ends_with(entry.name, ".npy") && entry.name.rfind("tth/", 0) != 0);
    if (state && (largest == nullptr || entry.uncompressed_size > largest->uncompressed_size)) {
      largest = &entry;
    }
  }
  ASSERT_NE(largest, nullptr);
  ASSERT_GE(largest->uncompressed_size, 48u);  // not a 0-d metadata value
  auto bytes = read_file(path);
  bytes.at(largest->data_offset + largest->compressed_size - 1) ^= 0x01;
  write_file(path, bytes);
}

TEST(SnapshotKeepBest, KeepsTheNewestAndTheBestWithExactSetsAfterEachSnapshot) {
  TempDir dir;
  Training setup(dir.path().string());
  extend_keep_best(setup, 2, KeepBestOptions(2, kAccuracy).mode(Mode::kMax));
  expect_files_after_each(setup, dir, {0.5, 0.9, 0.3, 0.7, 0.95, 0.1, 0.2, 0.6},
                          {{"s_1"},
                           {"s_1", "s_2"},
                           {"s_1", "s_2", "s_3"},
                           {"s_2", "s_3", "s_4"},         // s_1 is neither newest nor best
                           {"s_2", "s_4", "s_5"},         // s_5 is both newest and best
                           {"s_2", "s_5", "s_6"},         // s_6, the worst, is the resume point
                           {"s_2", "s_5", "s_6", "s_7"},  // the newest two, the best two
                           {"s_2", "s_5", "s_7", "s_8"}});
  // The value is in the file, exactly as reported.
  EXPECT_EQ(metric_in(dir / "s_5"), 0.95);
  EXPECT_EQ(read_snapshot(dir / "s_2").tensor(kRetentionMetricKey).scalar_type(), at::kDouble);
}

TEST(SnapshotKeepBest, MinKeepsTheSmallestAndAutoFollowsTheKeyName) {
  const std::vector<std::optional<double>> values = {0.5, 0.9, 0.3, 0.7, 0.95, 0.1, 0.2, 0.6};
  const std::vector<Files> smallest = {{"s_1"},
                                       {"s_1", "s_2"},
                                       {"s_1", "s_3"},
                                       {"s_1", "s_3", "s_4"},
                                       {"s_1", "s_3", "s_5"},
                                       {"s_3", "s_6"},
                                       {"s_6", "s_7"},
                                       {"s_6", "s_7", "s_8"}};
  const std::vector<Files> largest = {
      {"s_1"},        {"s_1", "s_2"},        {"s_1", "s_2", "s_3"}, {"s_2", "s_4"},
      {"s_2", "s_5"}, {"s_2", "s_5", "s_6"}, {"s_2", "s_5", "s_7"}, {"s_2", "s_5", "s_8"}};
  for (const auto& [key, mode, expected] : {std::tuple{"main/loss", Mode::kMin, smallest},
                                            std::tuple{"main/loss", Mode::kAuto, smallest},
                                            std::tuple{"main/accuracy", Mode::kAuto, largest},
                                            std::tuple{"main/loss", Mode::kMax, largest}}) {
    SCOPED_TRACE(std::string(key) + " mode " + std::to_string(static_cast<int>(mode)));
    TempDir dir;
    Training setup(dir.path().string());
    extend_keep_best(setup, 1, KeepBestOptions(2, key).mode(mode));
    for (size_t i = 0; i < values.size(); ++i) {
      step_reporting(setup, values[i], key);
      EXPECT_EQ(files_in(dir.path().string()), expected[i]) << "after iteration " << i + 1;
    }
  }
}

TEST(SnapshotKeepBest, TheNewestStaysEvenWhenItIsTheWorstAndTiesGoToTheOlder) {
  TempDir dir;
  Training setup(dir.path().string());
  extend_keep_best(setup, 1, KeepBestOptions(1, kAccuracy).mode(Mode::kMax));
  // Best-only retention would delete s_2 and s_3, the resume points (Orbax's bug).
  expect_files_after_each(
      setup, dir, {0.9, 0.1, 0.05, 0.9, 0.9},
      {{"s_1"}, {"s_1", "s_2"}, {"s_1", "s_3"}, {"s_1", "s_4"}, {"s_1", "s_5"}});
}

TEST(SnapshotKeepBest, ASnapshotWithoutTheKeyOrAFiniteValueIsNeverAmongTheBest) {
  TempDir dir;
  CapturedWarnings warnings;
  Training setup(dir.path().string());
  extend_keep_best(setup, 1, KeepBestOptions(1, "validation/main/loss"));  // kAuto: kMin
  step_reporting(setup, 0.5, "validation/main/loss");
  step_reporting(setup, std::nullopt);  // the evaluator did not run this iteration
  EXPECT_EQ(files_in(dir.path().string()), (Files{"s_1", "s_2"}));
  EXPECT_FALSE(read_snapshot_metadata(dir / "s_2").contains(kRetentionMetricKey));
  EXPECT_FALSE(read_snapshot(dir / "s_2").contains(kRetentionMetricKey));
  step_reporting(setup, std::numeric_limits<double>::quiet_NaN(), "validation/main/loss");
  EXPECT_FALSE(read_snapshot_metadata(dir / "s_3").contains(kRetentionMetricKey));
  step_reporting(setup, 0.7, "validation/main/loss");
  // Had a missing value counted as 0 (or NaN compared), s_2 or s_3 would beat s_1.
  EXPECT_EQ(files_in(dir.path().string()), (Files{"s_1", "s_4"}));
  size_t about_the_key = 0;
  for (const auto& message : warnings.messages()) {
    about_the_key += message.find("keep_best key 'validation/main/loss'") != std::string::npos;
  }
  EXPECT_EQ(about_the_key, 1u);  // once, for s_2
  EXPECT_TRUE(warnings.contains("keep_best key 'validation/main/loss' was not reported when '" +
                                (dir / "s_2") + "' was saved"));
}

TEST(SnapshotKeepBest, ARestartReadsTheValuesOfThePreviousRunsFiles) {
  for (const bool npz : {false, true}) {
    SCOPED_TRACE(npz ? "npz" : "LibTorch archive");
    TempDir dir;
    CapturedWarnings warnings;
    const auto options = [&] {
      SnapshotOptions options = SnapshotOptions().autoload(true);
      if (npz) options.savefun(npz_savefun());
      return options;
    };
    {
      Training first(dir.path().string());
      extend_keep_best(first, 1, KeepBestOptions(2, kAccuracy), options());
      expect_files_after_each(first, dir, {0.3, 0.8, 0.6, 0.2},
                              {{"s_1"}, {"s_1", "s_2"}, {"s_2", "s_3"}, {"s_2", "s_3", "s_4"}});
      first.hook->finalize();
    }
    // A byte of s_2's state flipped: its CRC fails, but retention reads only its metadata, so
    // its value still counts (no whole file is read or checked to rank it).
    flip_a_state_byte(dir / "s_2");
    ASSERT_THROW(verify_snapshot(dir / "s_2"), FormatError);
    Training second(dir.path().string(), /*seed=*/3);
    auto snap = snapshot(
        options().filename("s_{iteration}").n_retains(1).keep_best(KeepBestOptions(2, kAccuracy)));
    second.hook->extend(snap, ExtendOptions().trigger({1, iteration}));
    step_reporting(second, 0.7);
    ASSERT_TRUE(snap->loaded_path());
    EXPECT_EQ(*snap->loaded_path(), dir / "s_4");
    // Newest s_5; best 0.8 (s_2, read back) and 0.7 (s_5): 0.6 and 0.2 go.
    EXPECT_EQ(files_in(dir.path().string()), (Files{"s_2", "s_5"}));
    EXPECT_FALSE(warnings.contains("keep_best cannot read"));
  }
}

TEST(SnapshotKeepBest, FilesFurtherAlongAreLeftAloneAndDoNotCompete) {
  TempDir dir;
  // Another run's file, further along and with the best value of all.
  StateDict foreign;
  foreign.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  foreign.set_int(kIterationKey, 100);
  foreign.set_double(kRetentionMetricKey, 0.99);
  torch_savefun()(dir / "s_100", foreign);
  Training setup(dir.path().string());
  extend_keep_best(setup, 1, KeepBestOptions(1, kAccuracy));
  // Had s_100 counted as the best, s_1 would go after iteration 2.
  expect_files_after_each(setup, dir, {0.6, 0.5, 0.7},
                          {{"s_1", "s_100"}, {"s_1", "s_100", "s_2"}, {"s_100", "s_3"}});
}

TEST(SnapshotKeepBest, AFileWhoseValueCannotBeReadHasNone) {
  TempDir dir;
  CapturedWarnings warnings;
  write_file(dir / "s_1", {'n', 'o', 't', ' ', 'a', ' ', 'z', 'i', 'p'});
  StateDict text_value;
  text_value.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  text_value.set(kRetentionMetricKey, std::string("0.99"));
  torch_savefun()(dir / "s_2", text_value);
  Training setup(dir.path().string());
  extend_keep_best(setup, 1, KeepBestOptions(2, kAccuracy),
                   SnapshotOptions().condition(
                       [](const TorchTrainerHook& hook) { return hook.iteration() >= 3; }));
  setup.hook->run_iteration([] {});
  setup.hook->run_iteration([] {});
  step_reporting(setup, 0.5);
  // With room for two best files, s_1 or s_2 would stay had either a value.
  EXPECT_EQ(files_in(dir.path().string()), (Files{"s_3"}));
  EXPECT_TRUE(warnings.contains("keep_best cannot read the value of '" + (dir / "s_1") + "'"));
}

// Commits at once but calls `committed` later, on another thread, as an asynchronous writer
// may: after training went on, or after the hook and the extension are gone.
class DeferringWriter : public Writer {
 public:
  void write(const std::string& path, StateDict state,
             const std::function<void()>& committed) override {
    atomic_write(path, [&](const std::string& temp) { torch_savefun()(temp, state); });
    pending_.push_back(committed);
  }
  void commit_pending_on_another_thread() {
    std::thread([this] {
      for (const auto& committed : pending_) committed();
    }).join();
    pending_.clear();
  }

 private:
  std::vector<std::function<void()>> pending_;
};

TEST(SnapshotKeepBest, RetentionUsesWhatSaveCapturedNotTheHook) {
  TempDir dir;
  CapturedWarnings warnings;  // s_3 has no value; the writer's thread warns nothing
  auto writer = std::make_shared<DeferringWriter>();
  {
    Training setup(dir.path().string());
    extend_keep_best(setup, 1, KeepBestOptions(2, kAccuracy), SnapshotOptions().writer(writer));
    step_reporting(setup, 0.3);
    step_reporting(setup, 0.8);
    step_reporting(setup, std::nullopt);  // what the hook observes when the callbacks run
    EXPECT_EQ(files_in(dir.path().string()), (Files{"s_1", "s_2", "s_3"}));
    writer->commit_pending_on_another_thread();
    EXPECT_EQ(files_in(dir.path().string()), (Files{"s_1", "s_2", "s_3"}));  // 0.8, 0.3, newest
    step_reporting(setup, 0.6);
    step_reporting(setup, 0.2);
  }  // the hook and the extension are gone before these commits finish
  writer->commit_pending_on_another_thread();
  EXPECT_EQ(files_in(dir.path().string()), (Files{"s_2", "s_4", "s_5"}));  // 0.8, 0.6, newest
}

TEST(SnapshotKeepBest, AutoloadLoadsTheNewestVerifiedSnapshotAndIgnoresTheValue) {
  TempDir dir;
  {
    CapturedWarnings warnings;  // s_1, s_3 and s_5 have no value
    Training first(dir.path().string());
    extend_keep_best(first, 1, KeepBestOptions(1, kAccuracy));
    for (double value : {0.9, 0.1, 0.2}) {
      first.step();  // the model changes, so each snapshot's weights differ
      step_reporting(first, value);
    }
    first.hook->finalize();
  }
  ASSERT_EQ(files_in(dir.path().string()), (Files{"s_2", "s_6"}));
  const StateDict whole = read_snapshot(dir / "s_2");
  EXPECT_EQ(whole.get_double(kRetentionMetricKey), 0.9);
  EXPECT_EQ(verify_snapshot(dir / "s_2").get_double(kRetentionMetricKey), 0.9);
  const StateDict saved = without_metadata(whole);
  EXPECT_FALSE(saved.contains(kRetentionMetricKey));
  // The newest torn: autoload falls back to the newest that verifies, value and all.
  auto torn = read_file(dir / "s_6");
  torn.resize(torn.size() / 2);
  write_file(dir / "s_6", torn);

  Training second(dir.path().string(), /*seed=*/5);
  auto snap = snapshot(SnapshotOptions()
                           .filename("s_{iteration}")
                           .autoload(true)
                           .n_retains(1)
                           .keep_best(KeepBestOptions(1, kAccuracy)));
  second.hook->extend(snap, ExtendOptions().trigger({1, iteration}));
  {
    CapturedWarnings warnings;
    step_reporting(second, 0.5);  // a strict whole-state load: an unknown key would throw
    EXPECT_TRUE(warnings.contains("autoload skips '" + (dir / "s_6") + "'"));
  }
  ASSERT_TRUE(snap->loaded_path());
  EXPECT_EQ(*snap->loaded_path(), dir / "s_2");
  EXPECT_EQ(second.hook->iteration(), 3);
  EXPECT_TRUE(same_tensor(second.model->parameters()[0], saved.tensor("models/main/0.weight")));

  // snapshot_object: its strict load ignores the value too.
  {
    Training object_run(dir / "object");
    object_run.hook->extend(
        snapshot_object(object_run.model, "m_{iteration}",
                        SnapshotOptions().n_retains(1).keep_best(KeepBestOptions(1, kAccuracy))),
        ExtendOptions().trigger({1, iteration}));
    step_reporting(object_run, 0.4);
    object_run.hook->finalize();
  }
  EXPECT_EQ(metric_in(dir / "object/m_1"), 0.4);
  Training object_resumed(dir / "object", /*seed=*/6);
  object_resumed.hook->extend(
      snapshot_object(object_resumed.model, "m_{iteration}", SnapshotOptions().autoload(true)),
      ExtendOptions().trigger(TriggerRef::never()));
  object_resumed.hook->run_iteration([] {});
  const StateDict object_saved = read_snapshot(dir / "object/m_1");
  EXPECT_TRUE(same_tensor(object_resumed.model->parameters()[0], object_saved.tensor("0.weight")));
}

TEST(SnapshotKeepBest, BadOptionsNameTheOption) {
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().keep_best(KeepBestOptions(3, kAccuracy))), Error,
                    "SnapshotOptions: keep_best requires n_retains >= 1 (n_retains -1 keeps every "
                    "file anyway), got n_retains -1");
  EXPECT_THROW_WITH(
      snapshot(SnapshotOptions().n_retains(1).keep_best(KeepBestOptions(0, kAccuracy))), Error,
      "SnapshotOptions: keep_best.n must be >= 1, got 0");
  EXPECT_THROW_WITH(
      snapshot(SnapshotOptions().n_retains(1).keep_best(KeepBestOptions(-2, kAccuracy))), Error,
      "SnapshotOptions: keep_best.n must be >= 1, got -2");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().n_retains(1).keep_best(KeepBestOptions(1, ""))),
                    Error, "SnapshotOptions: keep_best.key must not be empty");
  EXPECT_THROW_WITH(snapshot_object(std::make_shared<torch::nn::LinearImpl>(2, 2), "m_{iteration}",
                                    SnapshotOptions().keep_best(KeepBestOptions(1, kAccuracy))),
                    Error, "SnapshotOptions: keep_best requires n_retains >= 1");
  EXPECT_NO_THROW(snapshot(SnapshotOptions().n_retains(1).keep_best(KeepBestOptions(1, "k"))));
}

TEST(SnapshotFile, ReadSnapshotMetadataReadsOnlyTheMetadata) {
  TempDir dir;
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, 7);
  state.set_double(kRetentionMetricKey, 0.25);
  state.set("w", torch::arange(64, torch::kFloat));
  for (const auto& [name, savefun] :
       {std::pair{"a.pt", torch_savefun()}, std::pair{"a.npz", npz_savefun()}}) {
    SCOPED_TRACE(name);
    const std::string path = dir / name;
    savefun(path, state);
    flip_a_state_byte(path);
    EXPECT_THROW_WITH(verify_snapshot(path), FormatError, "CRC-32");
    const StateDict metadata = read_snapshot_metadata(path);
    std::vector<std::string> keys;
    for (const auto& entry : metadata) keys.push_back(entry.first);
    EXPECT_EQ(keys,
              (std::vector<std::string>{kFormatVersionKey, kIterationKey, kRetentionMetricKey}));
    EXPECT_EQ(metadata.get_double(kRetentionMetricKey), 0.25);
    auto torn = read_file(path);
    torn.resize(torn.size() - 30);  // the index is gone
    write_file(path, torn);
    EXPECT_THROW_WITH(read_snapshot_metadata(path), FormatError, path);
  }
  write_file(dir / "plain", {'x', 'y'});
  EXPECT_THROW_WITH(read_snapshot_metadata(dir / "plain"), FormatError,
                    "'" + (dir / "plain") + "' is neither a LibTorch archive nor an npz file");
  // A newer format is refused as read_snapshot refuses it.
  StateDict future = state;
  future.set_int(kFormatVersionKey, kSnapshotFormatVersion + 1);
  torch_savefun()(dir / "future.pt", future);
  EXPECT_THROW_WITH(read_snapshot_metadata(dir / "future.pt"), FormatError,
                    fmt::format("format version {}", kSnapshotFormatVersion + 1));
  // A large metadata value is a file built to make the reader allocate: refused unread.
  StateDict large = state;
  large.set("tth/large", torch::zeros({int64_t{1} << 19}, torch::kFloat));  // 2 MiB
  torch_savefun()(dir / "large.pt", large);
  EXPECT_THROW_WITH(read_snapshot_metadata(dir / "large.pt"), FormatError,
                    "bytes, but metadata is small");
  EXPECT_THROW_WITH(verify_snapshot(dir / "large.pt"), FormatError, "bytes, but metadata is small");
}

}  // namespace
}  // namespace tth
