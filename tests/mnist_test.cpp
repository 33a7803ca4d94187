// The MNIST example (examples/mnist): its IDX reader (idx.h) on small generated files, raw and
// gzip, and on every kind of malformed file, each error naming the file and the problem; its
// tensor layer (data.h); and the program itself (TTH_MNIST) on a tiny generated dataset: an
// uninterrupted run, the same run SIGKILLed in epoch 2 and started again (the same model_final
// to the byte, one log row per epoch), the npz savefun read by numpy, --trainer, and the exit
// codes of bad flags (2) and bad data (1); and data-parallel training: two ranks of it on
// loopback sharing one --out, resumed, and through scripts/launch-distributed.sh.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "data.h"
#include "idx.h"
#include "support.h"
#include "test_programs.h"

extern char** environ;

namespace mnist {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using tth::test::Bytes;
using tth::test::free_port;
using tth::test::read_file;
using tth::test::run_command;
using tth::test::shell_quote;
using tth::test::TempDir;
using tth::test::write_file;

// ---- Generated IDX files ----

void put_u32(Bytes& bytes, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(uint8_t(value >> shift));
}

// An IDX file: magic 0x00 0x00 `type` dims.size(), the dimensions, then `data`.
Bytes idx(uint8_t type, const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes bytes = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t dim : dims) put_u32(bytes, dim);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

// `count` images of rows x columns whose pixels follow from `seed`, and their labels: the
// label is drawn, and the image holds a bright row at the label's position plus noise, so
// that a model can learn something from a few hundred of them.
struct Generated {
  Bytes pixels;
  Bytes labels;
};
Generated generate(uint32_t count, uint32_t rows, uint32_t columns, uint32_t seed) {
  std::mt19937 random(seed);
  Generated out;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t label = uint8_t(random() % kClasses);
    out.labels.push_back(label);
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t c = 0; c < columns; ++c) {
        const bool bright = r == (label * rows) / kClasses + 1;
        out.pixels.push_back(uint8_t(bright ? 200 + random() % 56 : random() % 100));
      }
    }
  }
  return out;
}

Bytes images_file(uint32_t count, const Generated& data, uint32_t rows = 28, uint32_t cols = 28) {
  return idx(kIdxUnsignedByte, {count, rows, cols}, data.pixels);
}
Bytes labels_file(const Bytes& labels) {
  return idx(kIdxUnsignedByte, {uint32_t(labels.size())}, labels);
}

// A gzip member of `data` (zlib with a gzip wrapper, as gzip(1) writes).
Bytes gzip(const Bytes& data) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&stream, data.size()) + 64);
  stream.next_in = const_cast<uint8_t*>(data.data());
  stream.avail_in = uInt(data.size());
  stream.next_out = out.data();
  stream.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

IdxImages parse_images(const Bytes& bytes, uint64_t max_bytes = kDefaultMaxBytes) {
  return parse_idx_images(bytes.data(), bytes.size(), "train-images-idx3-ubyte.gz", max_bytes);
}
IdxLabels parse_labels(const Bytes& bytes) {
  return parse_idx_labels(bytes.data(), bytes.size(), "train-labels-idx1-ubyte.gz");
}

// ---- The reader ----

TEST(IdxReader, ReadsRawAndGzipFilesAlike) {
  TempDir dir;
  const Generated data = generate(5, 28, 28, 1);
  write_file(dir / "images", images_file(5, data));
  write_file(dir / "images.gz", gzip(images_file(5, data)));
  write_file(dir / "labels", labels_file(data.labels));
  write_file(dir / "labels.gz", gzip(labels_file(data.labels)));
  for (const std::string name : {"images", "images.gz"}) {
    const IdxImages images = read_idx_images(dir / name);
    EXPECT_EQ(images.count, 5u);
    EXPECT_EQ(images.rows, 28u);
    EXPECT_EQ(images.columns, 28u);
    EXPECT_EQ(images.pixels, data.pixels) << name;
  }
  for (const std::string name : {"labels", "labels.gz"}) {
    EXPECT_EQ(read_idx_labels(dir / name).labels, data.labels) << name;
  }
}

TEST(IdxReader, ReadsConcatenatedGzipMembersAsOneStream) {
  const Generated data = generate(3, 4, 5, 2);
  const Bytes whole = images_file(3, data, 4, 5);
  const size_t cut = 9;  // inside the header: the members split anywhere
  Bytes two = gzip(Bytes(whole.begin(), whole.begin() + cut));
  const Bytes second = gzip(Bytes(whole.begin() + cut, whole.end()));
  two.insert(two.end(), second.begin(), second.end());
  EXPECT_EQ(parse_images(two).pixels, data.pixels);
}

TEST(IdxReader, ReadsAnEmptyFileOfZeroImages) {
  const IdxImages images = parse_images(idx(kIdxUnsignedByte, {0, 28, 28}, {}));
  EXPECT_EQ(images.count, 0u);
  EXPECT_TRUE(images.pixels.empty());
}

TEST(IdxReader, RefusesAnotherMagicNumber) {
  // A label file's magic where images are expected, and the reverse.
  EXPECT_THROW_WITH(parse_images(labels_file({1, 2})), tth::FormatError,
                    "train-images-idx3-ubyte.gz: magic number 0x00000801 is not an IDX3 image "
                    "file (0x00000803)");
  EXPECT_THROW_WITH(parse_labels(images_file(1, generate(1, 28, 28, 3))), tth::FormatError,
                    "train-labels-idx1-ubyte.gz: magic number 0x00000803 is not an IDX1 label "
                    "file (0x00000801)");
  Bytes not_idx = images_file(1, generate(1, 28, 28, 3));
  not_idx[0] = 'P';
  not_idx[1] = 'K';
  EXPECT_THROW_WITH(parse_images(not_idx), tth::FormatError,
                    "train-images-idx3-ubyte.gz: magic number 0x504B0803 is not an IDX3 image "
                    "file (0x00000803)");
  EXPECT_THROW_WITH(parse_images(idx(kIdxUnsignedByte, {1, 28}, Bytes(28))), tth::FormatError,
                    "magic number 0x00000802 is not an IDX3 image file (0x00000803): it has 2 "
                    "dimensions, not 3");
  EXPECT_THROW_WITH(parse_images(idx(0x42, {1, 1, 1}, Bytes(1))), tth::FormatError,
                    "is not an IDX3 image file (0x00000803): unknown element type 0x42");
}

TEST(IdxReader, RefusesElementTypesOtherThanUnsignedBytes) {
  EXPECT_THROW_WITH(parse_images(idx(0x0D, {1, 2, 2}, Bytes(16))), tth::FormatError,
                    "train-images-idx3-ubyte.gz: element type 0x0D (float32) is not supported: "
                    "MNIST-format files hold unsigned bytes (0x08)");
  EXPECT_THROW_WITH(parse_labels(idx(0x0C, {2}, Bytes(8))), tth::FormatError,
                    "element type 0x0C (int32) is not supported");
}

TEST(IdxReader, RefusesTruncatedFiles) {
  const Bytes whole = images_file(60, generate(60, 28, 28, 4));
  // In the data: the message says what the header promised and what is there.
  const Bytes cut(whole.begin(), whole.begin() + 16 + 1234);
  const std::string expected =
      "train-images-idx3-ubyte.gz: truncated: header says 60 images of 28x28 (47040 bytes), the "
      "file holds 1234";
  EXPECT_THROW_WITH(parse_images(cut), tth::FormatError, expected);
  EXPECT_THROW_WITH(parse_images(gzip(cut)), tth::FormatError, expected);
  // In the header, and before the magic number ends.
  EXPECT_THROW_WITH(parse_images(Bytes(whole.begin(), whole.begin() + 10)), tth::FormatError,
                    "truncated: the file ends after 10 of its 16 header bytes");
  EXPECT_THROW_WITH(parse_images(Bytes{0, 0}), tth::FormatError,
                    "truncated: 2 bytes, shorter than the 4-byte IDX magic number");
  EXPECT_THROW_WITH(parse_images(Bytes{}), tth::FormatError, "truncated: 0 bytes");
}

TEST(IdxReader, RefusesTrailingBytes) {
  Bytes file = labels_file({1, 2, 3});
  file.insert(file.end(), {7, 7, 7, 7, 7});
  const std::string expected =
      "train-labels-idx1-ubyte.gz: trailing data: the 3 labels (3 bytes) are followed by 5 more "
      "bytes";
  EXPECT_THROW_WITH(parse_labels(file), tth::FormatError, expected);
  EXPECT_THROW_WITH(parse_labels(gzip(file)), tth::FormatError, expected);
}

TEST(IdxReader, RefusesSizesThatOverflowOrPassTheLimit) {
  EXPECT_THROW_WITH(parse_images(idx(kIdxUnsignedByte, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {})),
                    tth::FormatError,
                    "header says 4294967295 images of 4294967295x4294967295: the size overflows "
                    "64 bits");
  EXPECT_THROW_WITH(parse_images(idx(kIdxUnsignedByte, {2000, 28, 28}, {}), 1 << 20),
                    tth::FormatError,
                    "header says 2000 images of 28x28 (1568000 bytes), more than the reader's "
                    "limit of 1048576 bytes");
  EXPECT_THROW_WITH(parse_images(idx(kIdxUnsignedByte, {1, 0, 28}, {})), tth::FormatError,
                    "header says 1 images of 0x28: an image needs at least one pixel");
}

TEST(IdxReader, AHeaderClaimingMoreThanTheFileHoldsEndsAsTruncated) {
  // 1.3 million images (1 GB, under the default limit) announced, 10 bytes present: the reader
  // must not reserve what the header claims before the bytes arrive. Under the sanitizer
  // builds of the fuzzer an allocation of 1 GB would exceed its memory limit.
  EXPECT_THROW_WITH(parse_images(gzip(idx(kIdxUnsignedByte, {1300000, 28, 28}, Bytes(10)))),
                    tth::FormatError,
                    "truncated: header says 1300000 images of 28x28 (1019200000 bytes), the file "
                    "holds 10");
}

TEST(IdxReader, AGzipBombStopsAtTheSizeTheHeaderAnnounces) {
  // 2 images announced, 64 MiB of zeros inflated behind them: reading stops a bounded
  // distance past the announced bytes instead of inflating everything.
  Bytes bomb = idx(kIdxUnsignedByte, {2, 28, 28}, Bytes(2 * 28 * 28));
  bomb.resize(bomb.size() + (64 << 20));
  const Bytes compressed = gzip(bomb);
  EXPECT_LT(compressed.size(), 100u << 10);
  EXPECT_THROW_WITH(parse_images(compressed), tth::FormatError,
                    "trailing data: the 2 images of 28x28 (1568 bytes) are followed by more than "
                    "1048576 more bytes");
}

TEST(IdxReader, RefusesCorruptGzip) {
  const Bytes good = gzip(labels_file({1, 2, 3, 4}));
  Bytes flipped = good;
  flipped[flipped.size() - 6] ^= 0x01;  // inside the CRC-32 of the trailer
  EXPECT_THROW_WITH(parse_labels(flipped), tth::FormatError,
                    "train-labels-idx1-ubyte.gz: corrupt gzip data: incorrect data check");
  Bytes bad_method = good;
  bad_method[2] = 7;  // compression method: only 8 (deflate) exists
  EXPECT_THROW_WITH(parse_labels(bad_method), tth::FormatError,
                    "train-labels-idx1-ubyte.gz: corrupt gzip data: unknown compression method");
  // Cut inside the trailer: every announced byte is there, but the stream is unfinished.
  const Bytes cut(good.begin(), good.end() - 3);
  EXPECT_THROW_WITH(parse_labels(cut), tth::FormatError,
                    "train-labels-idx1-ubyte.gz: truncated gzip stream");
  EXPECT_THROW_WITH(parse_labels(Bytes{0x1f, 0x8b}), tth::FormatError, "truncated gzip stream");
}

TEST(IdxReader, RefusesLabelsOutOfRange) {
  EXPECT_THROW_WITH(parse_labels(labels_file({0, 9, 3, 12})), tth::FormatError,
                    "train-labels-idx1-ubyte.gz: label 12 at index 3 is out of range 0..9");
}

TEST(IdxReader, RefusesDifferentImageAndLabelCounts) {
  IdxImages images;
  images.count = 60000;
  IdxLabels labels;
  labels.labels.resize(59999);
  EXPECT_THROW_WITH(
      check_same_count(images, "a/train-images-idx3-ubyte", labels, "a/train-labels-idx1-ubyte"),
      tth::FormatError,
      "a/train-images-idx3-ubyte holds 60000 images but a/train-labels-idx1-ubyte "
      "holds 59999 labels");
}

TEST(IdxReader, AMissingOrUnreadableFileNamesThePath) {
  TempDir dir;
  EXPECT_THROW_WITH(read_idx_images(dir / "absent.gz"), tth::IOError,
                    "open '" + (dir / "absent.gz") + "': No such file or directory");
  EXPECT_THROW_WITH(read_idx_labels(dir.path().string()), tth::FormatError,
                    dir.path().string() + ": not a regular file");
  // A FIFO without a writer is refused at once, not waited on.
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  EXPECT_THROW_WITH(read_idx_images(dir / "fifo"), tth::FormatError,
                    (dir / "fifo") + ": not a regular file");
}

// ---- Finding and loading a dataset ----

// Writes a dataset of `train` and `test` examples into `dir`: training files raw, test files
// gzip-compressed, so that both are exercised.
void write_dataset(const std::string& dir, uint32_t train, uint32_t test) {
  const Generated train_data = generate(train, 28, 28, 10);
  const Generated test_data = generate(test, 28, 28, 11);
  write_file(dir + "/train-images-idx3-ubyte", images_file(train, train_data));
  write_file(dir + "/train-labels-idx1-ubyte", labels_file(train_data.labels));
  write_file(dir + "/t10k-images-idx3-ubyte.gz", gzip(images_file(test, test_data)));
  write_file(dir + "/t10k-labels-idx1-ubyte.gz", gzip(labels_file(test_data.labels)));
}

TEST(MnistData, FindsRawAndGzipNamesPreferringRaw) {
  TempDir dir;
  write_dataset(dir.path().string(), 4, 2);
  write_file(dir / "train-images-idx3-ubyte.gz", Bytes{1});  // a raw file beside it wins
  const MnistFiles files = find_mnist_files(dir.path().string());
  EXPECT_EQ(files.train_images, dir / "train-images-idx3-ubyte");
  EXPECT_EQ(files.train_labels, dir / "train-labels-idx1-ubyte");
  EXPECT_EQ(files.test_images, dir / "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(files.test_labels, dir / "t10k-labels-idx1-ubyte.gz");
}

TEST(MnistData, AMissingFileNamesThePathAndWhatTheDirectoryNeeds) {
  TempDir dir;
  write_dataset(dir.path().string(), 4, 2);
  fs::remove(dir / "t10k-labels-idx1-ubyte.gz");
  EXPECT_THROW_WITH(find_mnist_files(dir.path().string()), tth::Error,
                    "MNIST data: neither '" + (dir / "t10k-labels-idx1-ubyte") + "' nor '" +
                        (dir / "t10k-labels-idx1-ubyte.gz") +
                        "' exists: --data must name a directory holding train-images-idx3-ubyte");
}

TEST(MnistData, TensorsAreScaledImagesAndLongLabels) {
  const Generated data = generate(6, 3, 2, 5);
  IdxImages images;
  images.count = 6;
  images.rows = 3;
  images.columns = 2;
  images.pixels = data.pixels;
  IdxLabels labels{data.labels};
  const Examples all = to_examples(images, labels);
  EXPECT_EQ(all.images.sizes(), (std::vector<int64_t>{6, 1, 3, 2}));
  EXPECT_EQ(all.images.scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(all.images[2][0][1][0].item<float>(), data.pixels[2 * 6 + 1 * 2] / 255.0f);
  EXPECT_EQ(all.labels.scalar_type(), torch::kLong);
  EXPECT_EQ(all.labels[4].item<int64_t>(), data.labels[4]);
  const Examples first = to_examples(images, labels, 4);
  EXPECT_EQ(first.size(), 4);
  EXPECT_TRUE(first.images.equal(all.images.slice(0, 0, 4)));
}

TEST(MnistData, LoadChecksCountsAndNormalizesByTheTrainingSplit) {
  TempDir dir;
  write_dataset(dir.path().string(), 40, 10);
  const Dataset plain = load_mnist(dir.path().string(), LoadOptions().limit(30));
  EXPECT_EQ(plain.train.size(), 30);
  EXPECT_EQ(plain.test.size(), 10);
  const Dataset normalized = load_mnist(dir.path().string(), LoadOptions().normalize(true));
  EXPECT_NEAR(normalized.train.images.mean().item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(normalized.train.images.std().item<double>(), 1.0, 1e-5);

  write_file(dir / "train-labels-idx1-ubyte", labels_file(Bytes(39, 1)));
  EXPECT_THROW_WITH(load_mnist(dir.path().string()), tth::FormatError,
                    (dir / "train-images-idx3-ubyte") + " holds 40 images but " +
                        (dir / "train-labels-idx1-ubyte") + " holds 39 labels");
}

TEST(MnistData, ReadsDebiansFashionMnist) {
  // The example's default data (scripts/install-deps.sh installs dataset-fashion-mnist).
  const MnistFiles files = find_mnist_files(kDefaultDataDirectory);
  EXPECT_EQ(files.train_images, std::string(kDefaultDataDirectory) + "/train-images-idx3-ubyte.gz");
  const IdxLabels labels = read_idx_labels(files.test_labels);
  ASSERT_EQ(labels.labels.size(), 10000u);
  std::vector<int> per_class(kClasses);
  for (uint8_t label : labels.labels) ++per_class[label];
  EXPECT_EQ(per_class, std::vector<int>(kClasses, 1000));  // Fashion-MNIST's test split
  const IdxImages images = read_idx_images(files.test_images);
  EXPECT_EQ(images.count, 10000u);
  EXPECT_EQ(images.rows, 28u);
}

// ---- The program ----

class MnistProgram : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    write_dataset(data_->path().string(), kTrain, kTest);
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  // The command line of a run on the generated data into `out`, with `flags` appended.
  static std::string command(const std::string& out, const std::string& flags) {
    return std::string(TTH_MNIST) + " --data " + shell_quote(data_->path().string()) + " --out " +
           shell_quote(out) + " --threads 1 --batch-size 32 " + flags;
  }

  // The kill test trains the CNN on all of it; the others take --limit kLimit (MLP) to be quick.
  static constexpr uint32_t kTrain = 512;
  static constexpr uint32_t kTest = 128;
  static constexpr int kItersPerEpoch = kTrain / 32;
  static constexpr int kLimit = 128;
  static constexpr int kLimitedItersPerEpoch = kLimit / 32;
  static std::string limit() { return std::to_string(kLimit); }
  static TempDir* data_;
};
TempDir* MnistProgram::data_ = nullptr;

// The rows of the LogReport file `path`: (epoch, iteration) each.
std::vector<std::pair<int, int>> log_rows(const std::string& path) {
  std::vector<std::pair<int, int>> rows;
  std::ifstream in(path);
  for (const auto& row : nlohmann::json::parse(in)) {
    rows.emplace_back(row.at("epoch").get<int>(), row.at("iteration").get<int>());
  }
  return rows;
}

// Starts `argv` with stdout and stderr into `log`; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& arg : copy) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw std::runtime_error("posix_spawn failed");
  return pid;
}

TEST_F(MnistProgram, AKilledRunStartedAgainEndsWithTheSameModelToTheByte) {
  TempDir work;
  const std::string flags = "--epochs 3 --model cnn --seed 3";
  // (a) Uninterrupted.
  const auto straight = run_command(command(work / "straight", flags));
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  EXPECT_THAT(straight.output, HasSubstr("test accuracy"));
  EXPECT_THAT(straight.output, HasSubstr("images/s"));
  const Bytes expected = read_file(work / "straight/model_final");
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(log_rows(work / "straight/log"),
            (std::vector<std::pair<int, int>>{
                {1, kItersPerEpoch}, {2, 2 * kItersPerEpoch}, {3, 3 * kItersPerEpoch}}));
  for (const char* file : {"loss.png", "accuracy.png", "model_best"}) {
    EXPECT_TRUE(fs::is_regular_file(work / ("straight/" + std::string(file)))) << file;
  }

  // (b) The same command, SIGKILLed once the first epoch's snapshot exists (in epoch 2), then
  // started again.
  const std::string out = work / "killed";
  const std::string first = out + "/snapshot_iter_" + std::to_string(kItersPerEpoch);
  const std::string second = out + "/snapshot_iter_" + std::to_string(2 * kItersPerEpoch);
  std::vector<std::string> args = {TTH_MNIST,
                                   "--data",
                                   data_->path().string(),
                                   "--out",
                                   out,
                                   "--threads",
                                   "1",
                                   "--batch-size",
                                   "32",
                                   "--epochs",
                                   "3",
                                   "--model",
                                   "cnn",
                                   "--seed",
                                   "3"};
  const pid_t pid = spawn(args, work / "killed.txt");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool exited = false;
  while (!fs::exists(first) && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (exited) {
    const Bytes log = read_file(work / "killed.txt");
    FAIL() << "the run ended before it could be killed:\n" << std::string(log.begin(), log.end());
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_TRUE(fs::exists(first));
  EXPECT_FALSE(fs::exists(second)) << "killed after epoch 2 ended, not in it";
  EXPECT_FALSE(fs::exists(out + "/model_final"));

  const auto resumed = run_command(command(out, flags));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("resumed from '" + first + "'"));
  EXPECT_TRUE(read_file(out + "/model_final") == expected)
      << "model_final differs from the uninterrupted run's";
  EXPECT_EQ(log_rows(out + "/log"), log_rows(work / "straight/log"));
}

TEST_F(MnistProgram, NpzModelFinalLoadsInNumpy) {
  TempDir work;
  const auto run =
      run_command(command(work / "npz", "--epochs 1 --model mlp --savefun npz --limit " + limit()));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string output = tth::test::python(R"(
import sys, numpy as np
with np.load(sys.argv[1]) as f:
    for key in sorted(f.files):
        print(key, f[key].dtype, f[key].shape)
)",
                                               {work / "npz/model_final"});
  EXPECT_THAT(output, HasSubstr("float32 (10,)"));  // the last layer's bias
  EXPECT_THAT(output, HasSubstr("tth/iteration int64 ()"));
}

TEST_F(MnistProgram, TrainerRunsTheSameTraining) {
  TempDir work;
  const std::string flags = "--epochs 2 --model mlp --seed 1 --limit " + limit();
  const auto own = run_command(command(work / "own", flags));
  ASSERT_EQ(own.exit_code, 0) << own.output;
  const auto trainer = run_command(command(work / "trainer", flags + " --trainer"));
  ASSERT_EQ(trainer.exit_code, 0) << trainer.output;
  EXPECT_EQ(log_rows(work / "trainer/log"), log_rows(work / "own/log"));
  // The same batches, steps and random draws: the same model.
  EXPECT_TRUE(read_file(work / "trainer/model_final") == read_file(work / "own/model_final"));
}

TEST_F(MnistProgram, ResumeNoneRefusesAnOutDirectoryWithSnapshotsAndResumePathLoadsOne) {
  TempDir work;
  const std::string flags = "--model mlp --limit " + limit();
  const auto first = run_command(command(work / "out", flags + " --epochs 1"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string snapshot = "snapshot_iter_" + std::to_string(kLimitedItersPerEpoch);
  const auto again = run_command(command(work / "out", flags + " --epochs 2 --resume none"));
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_THAT(again.output, HasSubstr("mnist: --resume none: '" + (work / "out") +
                                      "' holds snapshots of an earlier run (" + snapshot + ")"));
  // An explicit snapshot continues from it, in another directory.
  const auto from = run_command(command(
      work / "other", flags + " --epochs 2 --resume " + shell_quote(work / ("out/" + snapshot))));
  ASSERT_EQ(from.exit_code, 0) << from.output;
  EXPECT_THAT(from.output,
              HasSubstr("mnist: resumed from '" + (work / ("out/" + snapshot)) + "' (iteration " +
                        std::to_string(kLimitedItersPerEpoch) + ")"));
  EXPECT_EQ(log_rows(work / "other/log"),
            (std::vector<std::pair<int, int>>{{1, kLimitedItersPerEpoch},
                                              {2, 2 * kLimitedItersPerEpoch}}));
}

TEST_F(MnistProgram, BadFlagsExitWithStatus2AndAMessage) {
  TempDir work;
  const std::vector<std::pair<std::string, std::string>> cases = {
      // (CLI11 2.3 goes on "1 to 1000000", 2.4 "[1 - 1000000]")
      {"--epochs 0", "mnist: --epochs: Value 0 not in range "},
      {"--model rnn", "mnist: --model: rnn not in {cnn,mlp} (see mnist --help)"},
      {"--optimizer lbfgs", "--optimizer"},
      {"--lr abc", "--lr"},
      {"--lr -1", "--lr"},
      {"--no-such-flag", "--no-such-flag"},
      {"--resume /no/such/snapshot", "'/no/such/snapshot' is neither auto, none nor an existing"},
      // Data-parallel flags, refused before any rank waits for the others.
      {"--world-size 2 --rank 2",
       "mnist: --rank: 2 is not a rank of a job of --world-size 2 (0 to 1) (see mnist --help)"},
      {"--rank -1", "mnist: --rank: -1 is not a rank of a job of --world-size 1 (0 to 0)"},
      {"--world-size 0", "mnist: --world-size: Value 0 not in range "},
      {"--world-size 2 --master-port 0", "mnist: --master-port: Value 0 not in range "},
      {"--world-size 2 --master-addr ''", "mnist: --master-addr: must name rank 0's host"},
      {"--world-size 2 --timeout 0", "mnist: --timeout: Value 0 not in range "},
  };
  for (const auto& [flags, message] : cases) {
    const auto run = run_command(command(work / "out", flags));
    EXPECT_EQ(run.exit_code, 2) << flags << "\n" << run.output;
    EXPECT_THAT(run.output, HasSubstr(message)) << flags;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
    EXPECT_FALSE(fs::exists(work / "out")) << flags << ": nothing may be written";
  }
  const auto help = run_command(std::string(TTH_MNIST) + " --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--data",          "--epochs",
                           "--batch-size",    "--lr",
                           "--model",         "--optimizer",
                           "--out",           "--seed",
                           "--savefun",       "--resume",
                           "--threads",       "--trainer",
                           "--no-extensions", "--limit",
                           "--world-size",    "--rank",
                           "--master-addr",   "--master-port",
                           "--timeout",       "the job's batch is --world-size times"}) {
    EXPECT_THAT(help.output, HasSubstr(flag));
  }
}

TEST_F(MnistProgram, MalformedDataExitsWithStatus1NamingTheFile) {
  TempDir work;
  fs::create_directory(work / "data");
  write_dataset(work / "data", 8, 4);
  Bytes labels = read_file(work / "data/train-labels-idx1-ubyte");
  labels.back() = 11;
  write_file(work / "data/train-labels-idx1-ubyte", labels);
  const auto run = run_command(std::string(TTH_MNIST) + " --data " + shell_quote(work / "data") +
                               " --out " + shell_quote(work / "out"));
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_THAT(run.output, HasSubstr("mnist: " + (work / "data/train-labels-idx1-ubyte") +
                                    ": label 11 at index 7 is out of range 0..9"));
  const auto missing =
      run_command(std::string(TTH_MNIST) + " --data " + shell_quote(work / "none") + " --out " +
                  shell_quote(work / "out"));
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr(work / "none/train-images-idx3-ubyte"));
}

// ---- Data-parallel training ----

// How a rank of a job ended.
struct Rank {
  int exit_code = -1;  // -1: killed (by a signal, or by the deadline)
  std::string output;
};

// Waits for `pids` (killing what is left after `seconds`); returns each one's exit code.
std::vector<int> wait_all(const std::vector<pid_t>& pids, int seconds) {
  std::vector<int> codes(pids.size(), -1);
  std::vector<bool> done(pids.size(), false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (size_t left = pids.size(); left > 0;) {
    for (size_t i = 0; i < pids.size(); ++i) {
      int status = 0;
      if (done[i] || ::waitpid(pids[i], &status, WNOHANG) != pids[i]) continue;
      done[i] = true;
      --left;
      if (WIFEXITED(status)) codes[i] = WEXITSTATUS(status);
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!done[i]) ::kill(pids[i], SIGKILL);
      }
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!done[i]) ::waitpid(pids[i], nullptr, 0);
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return codes;
}

std::string text_of(const std::string& path) {
  const Bytes bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

class MnistDistributed : public MnistProgram {
 protected:
  // Runs ranks 0 and 1 of a job on the generated data (the MLP, --limit kLimit: each rank
  // trains on 64 images, 2 batches of 32 per epoch) into the shared `out`, with `flags`
  // appended; each rank's output goes to `<logs>.rank<r>`.
  static std::vector<Rank> run_job(const std::string& out, const std::string& logs,
                                   const std::vector<std::string>& flags) {
    const std::string port = std::to_string(free_port());
    std::vector<pid_t> pids;
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<std::string> args = {TTH_MNIST,
                                       "--data",
                                       data_->path().string(),
                                       "--out",
                                       out,
                                       "--threads",
                                       "1",
                                       "--batch-size",
                                       "32",
                                       "--model",
                                       "mlp",
                                       "--seed",
                                       "5",
                                       "--limit",
                                       limit(),
                                       "--world-size",
                                       "2",
                                       "--rank",
                                       std::to_string(rank),
                                       "--master-port",
                                       port,
                                       "--timeout",
                                       "60"};
      args.insert(args.end(), flags.begin(), flags.end());
      pids.push_back(spawn(args, logs + ".rank" + std::to_string(rank)));
    }
    const std::vector<int> codes = wait_all(pids, 120);
    std::vector<Rank> ranks;
    for (int rank = 0; rank < 2; ++rank) {
      ranks.push_back({codes[rank], text_of(logs + ".rank" + std::to_string(rank))});
    }
    return ranks;
  }

  // Every entry of `dir`, lock files included, sorted.
  static std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  static constexpr int kItersPerRank = kLimit / 2 / 32;  // per epoch
  static std::string snapshot(int iteration) {
    return "snapshot_iter_" + std::to_string(iteration);
  }
};

TEST_F(MnistDistributed, TwoRanksShareOneOutDirectoryThatOnlyRank0WritesInto) {
  TempDir work;
  const std::string out = work / "out";
  const auto ranks = run_job(out, work / "job", {"--epochs", "2"});
  ASSERT_EQ(ranks[0].exit_code, 0) << ranks[0].output;
  // (Exit 0 includes the example's check that the ranks' models ended equal to the bit.)
  ASSERT_EQ(ranks[1].exit_code, 0) << ranks[1].output;
  // One set of files: rank 0's log, plots, snapshots (no shards, no per-rank copies) and
  // models; no lock file left behind by either rank.
  EXPECT_EQ(entries(out), (std::vector<std::string>{"accuracy.png", "log", "loss.png", "model_best",
                                                    "model_final", snapshot(2), snapshot(4)}));
  // Iterations count the job's steps: 2 per epoch, each rank half of the 128 examples.
  EXPECT_EQ(log_rows(out + "/log"),
            (std::vector<std::pair<int, int>>{{1, kItersPerRank}, {2, 2 * kItersPerRank}}));
  // Rank 0 prints the table and the summary; rank 1 only that it joined.
  EXPECT_THAT(ranks[0].output, HasSubstr("validation/main/accuracy"));
  EXPECT_THAT(ranks[0].output, HasSubstr("images on 2 ranks"));
  EXPECT_THAT(ranks[1].output, HasSubstr("mnist: rank 1 of 2 joined 127.0.0.1:"));
  for (const char* printed : {"epoch", "main/loss", "test accuracy", "model_final"}) {
    EXPECT_THAT(ranks[1].output, ::testing::Not(HasSubstr(printed))) << ranks[1].output;
  }
  // The log holds the job's means: the ranks' test shards differ, and their mean is logged.
  std::ifstream in(out + "/log");
  const nlohmann::json log = nlohmann::json::parse(in);
  for (const char* key :
       {"main/loss", "main/accuracy", "validation/main/loss", "validation/main/accuracy"}) {
    EXPECT_TRUE(log.at(1).contains(key)) << key;
  }
}

TEST_F(MnistDistributed, BothRanksResumeFromTheSameSnapshotAndEndWithTheSameModel) {
  TempDir work;
  const auto straight = run_job(work / "straight", work / "straight", {"--epochs", "2"});
  ASSERT_EQ(straight[0].exit_code, 0) << straight[0].output;
  ASSERT_EQ(straight[1].exit_code, 0) << straight[1].output;

  const std::string out = work / "out";
  const auto first = run_job(out, work / "first", {"--epochs", "1"});
  ASSERT_EQ(first[0].exit_code, 0) << first[0].output;
  ASSERT_EQ(first[1].exit_code, 0) << first[1].output;
  const auto second = run_job(out, work / "second", {"--epochs", "2"});
  for (const Rank& rank : second) {
    ASSERT_EQ(rank.exit_code, 0) << rank.output;
    EXPECT_THAT(rank.output,
                HasSubstr("snapshot: resumed from '" + out + "/" + snapshot(kItersPerRank) +
                          "' (iteration " + std::to_string(kItersPerRank) + ")"));
  }
  EXPECT_EQ(log_rows(out + "/log"), log_rows(work / "straight/log"));
  EXPECT_TRUE(read_file(out + "/model_final") == read_file(work / "straight/model_final"))
      << "model_final differs from the uninterrupted job's";

  // Trainer and StandardUpdater (which averages the gradients itself) train the same job.
  const auto trainer = run_job(work / "trainer", work / "trainer", {"--epochs", "2", "--trainer"});
  ASSERT_EQ(trainer[0].exit_code, 0) << trainer[0].output;
  ASSERT_EQ(trainer[1].exit_code, 0) << trainer[1].output;
  EXPECT_EQ(log_rows(work / "trainer/log"), log_rows(work / "straight/log"));
  EXPECT_TRUE(read_file(work / "trainer/model_final") == read_file(work / "straight/model_final"))
      << "--trainer's model_final differs from the own loop's";

  // --resume none refuses the directory on every rank, each with a message.
  const auto fresh = run_job(out, work / "fresh", {"--epochs", "2", "--resume", "none"});
  for (const Rank& rank : fresh) {
    EXPECT_EQ(rank.exit_code, 1) << rank.output;
    EXPECT_THAT(rank.output,
                HasSubstr("' holds snapshots of an earlier run (" + snapshot(kItersPerRank) + ", " +
                          snapshot(2 * kItersPerRank) + ")"));
  }
}

// The launcher script, beside this file's directory in the source tree. __FILE__ may be
// relative to the build directory (ccache's CCACHE_BASEDIR).
std::string launcher() {
  fs::path file = __FILE__;
  if (file.is_relative())
    file = fs::path(TTH_MNIST).parent_path().parent_path().parent_path() / file;
  return (file.parent_path().parent_path() / "scripts/launch-distributed.sh").string();
}

TEST_F(MnistDistributed, TheLauncherStartsTheRanksAndStopsThemWhenOneFails) {
  TempDir work;
  const std::string out = work / "out";
  const std::string arguments = " --data " + shell_quote(data_->path().string()) + " --out " +
                                shell_quote(out) + " --threads 1 --batch-size 32 --model mlp " +
                                "--limit " + limit() + " --epochs 1 --timeout 60";
  const auto run = run_command("TTH_MNIST_BINARY=" + shell_quote(TTH_MNIST) + " " +
                               shell_quote(launcher()) + " 2" + arguments);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("validation/main/accuracy"));  // rank 0 on the terminal
  EXPECT_THAT(text_of(out + "/rank1.log"), HasSubstr("mnist: rank 1 of 2 joined 127.0.0.1:"));
  EXPECT_EQ(log_rows(out + "/log"), (std::vector<std::pair<int, int>>{{1, kItersPerRank}}));

  // Rank 1 fails at once (status 3): rank 0, waiting for it to join, is stopped, and the
  // launcher exits with rank 1's status long before rank 0's timeout.
  const std::string script = "#!/bin/sh\ncase \" $* \" in *' --rank 1 '*) exit 3 ;; esac\nexec " +
                             shell_quote(TTH_MNIST) + " \"$@\"\n";
  write_file(work / "fail-rank1.sh", Bytes(script.begin(), script.end()));
  ::chmod((work / "fail-rank1.sh").c_str(), 0755);
  const auto start = std::chrono::steady_clock::now();
  const auto failed = run_command("TTH_MNIST_BINARY=" + shell_quote(work / "fail-rank1.sh") + " " +
                                  shell_quote(launcher()) + " 2" + arguments + " --out " +
                                  shell_quote(work / "failed"));
  EXPECT_EQ(failed.exit_code, 3) << failed.output;
  EXPECT_THAT(failed.output, HasSubstr("launch-distributed: rank 1 exited with status 3; "
                                       "stopping the others"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));

  const auto usage = run_command(shell_quote(launcher()) + " two");
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.output, HasSubstr("usage: "));
}

}  // namespace
}  // namespace mnist
