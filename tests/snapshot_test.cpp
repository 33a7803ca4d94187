#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>

#include <random>

#include "support.h"

extern char** environ;

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::python;
using test::read_file;
using test::run_command;
using test::same_tensor;
using test::shell_quote;
using test::TempDir;
using test::write_file;

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) names.push_back(fs::relative(entry.path(), dir).string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

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

// A small training setup whose whole state a snapshot saves.
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
      Error, "either savefun or writer");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().n_retains(0)), Error,
                    "SnapshotOptions: n_retains must be >= 1 (or -1 for all), got 0");
  EXPECT_THROW_WITH(snapshot(SnapshotOptions().filename("{iteration}/s").autoload(true)), Error,
                    "SnapshotOptions: filename may have fields only in its last component with "
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
  EXPECT_THAT(log, ::testing::HasSubstr("format version 2"));
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
      *target.optimizer->state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
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
  Training source(dir.path().string());
  source.steps(2);
  StateDict state = source.hook->state_dict();
  Training target(dir.path().string());
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
  Training fresh(dir.path().string());
  target.hook->load_state_dict(fresh.hook->state_dict());
  EXPECT_TRUE(target.optimizer->state().empty());
}

TEST(TrainingState, NonStrictLoadKeepsOptimizerStatePerParameter) {
  TempDir dir;
  Training source(dir.path().string(), 1);
  source.steps(2);
  Training target(dir.path().string(), 2);
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
  EXPECT_THAT(out, ::testing::HasSubstr("iteration 3 version 1"));
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
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("format: LibTorch archive"));
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("version: 1"));
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("iteration: 1"));
  EXPECT_THAT(inspect.output,
              ::testing::ContainsRegex("models/main/0.weight +Float +\\(4, 3\\) +48"));
  auto bytes = read_file(dir / "s");
  bytes[bytes.size() / 2] ^= 1;
  write_file(dir / "bad", bytes);
  const auto verify = run_command(std::string(TTH_TOOL) + " verify " + shell_quote(dir / "s") +
                                  " " + shell_quote(dir / "bad"));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_THAT(verify.output, ::testing::HasSubstr("ok " + (dir / "s")));
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
void run_and_kill(const std::string& out, std::mt19937& random) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::vector<std::string> args = {TTH_SNAPSHOT_CHILD, "crash-loop", "--out", out};
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

TEST(SnapshotCrash, KilledWritersNeverLeaveATornSnapshot) {
  const char* env = std::getenv("TTH_CRASH_KILLS");
  const int kills = env ? std::atoi(env) : 6;
  TempDir dir;
  const std::string out = dir / "out";
  std::mt19937 random(12345);
  int temps_seen = 0;
  for (int kill = 0; kill < kills; ++kill) {
    run_and_kill(out, random);
    temps_seen += static_cast<int>(temp_files_in(out).size());
    for (const auto& name : files_in(out)) {
      if (is_temp_file_name(fs::path(name).filename().string())) continue;
      EXPECT_NO_THROW(read_snapshot(out + "/" + name)) << "after kill " << kill << ": " << name;
    }
  }
  const std::string log = child("start --out " + shell_quote(out));
  EXPECT_THAT(log, ::testing::HasSubstr("resumed from"));
  EXPECT_TRUE(temp_files_in(out).empty());
  std::cout << "kills: " << kills << ", temp files left by kills: " << temps_seen << '\n';
}

}  // namespace
}  // namespace tth
