// IDX files: the format of MNIST, Fashion-MNIST and their relatives, read without trusting them.
//
// An IDX file is a 4-byte magic number (0x00 0x00, an element type, a dimension count), one
// big-endian uint32 per dimension, then the elements in row-major order. MNIST-format datasets
// ship four of them: images (type 0x08 unsigned byte, 3 dimensions: count x rows x columns) and
// labels (0x08, 1 dimension), for training and for testing, raw or gzip-compressed.
//
// The reader accepts exactly that and nothing else: the magic, the element type (unsigned
// bytes only; the other IDX types are refused by name), the dimension count, sizes that
// multiply without overflow and stay under a limit, and a length that matches the header to
// the byte (truncated data and trailing data are both errors). Labels must lie in 0..9. A
// gzip file (detected by its 1f 8b signature) is inflated with zlib into memory grown as
// bytes arrive and never beyond what the header announces, so a gzip bomb ends as "trailing
// data" instead of exhausting memory, and a header that claims more than the file holds ends
// as "truncated" after the memory the real data took. Every failure is a tth::Error whose
// message starts with the file's name; nothing here crashes or aborts on any input (the
// libFuzzer target tests/fuzz/idx_fuzz.cpp checks that).
//
// This file needs no LibTorch, so that it can be fuzzed alone; data.h turns its arrays into
// tensors.
//
// Thread safety: the functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mnist {

/// The IDX element type of MNIST's files: unsigned bytes.
inline constexpr uint8_t kIdxUnsignedByte = 0x08;
/// Labels are the classes 0 .. kClasses - 1.
inline constexpr int kClasses = 10;
/// Default limit on the element bytes of one file: 1 GiB, twenty times MNIST's training
/// images (47 MB), which bounds the memory a hostile header or gzip stream can ask for.
inline constexpr uint64_t kDefaultMaxBytes = uint64_t{1} << 30;

/// The images of an IDX3 file: `count` images of `rows` x `columns` bytes, row-major.
struct IdxImages {
  uint32_t count = 0;
  uint32_t rows = 0;
  uint32_t columns = 0;
  std::vector<uint8_t> pixels;  // count * rows * columns bytes
};

/// The labels of an IDX1 file, each in 0 .. kClasses - 1.
struct IdxLabels {
  std::vector<uint8_t> labels;
};

/// Reads an IDX3 image file (raw or gzip). Throws tth::IOError if it cannot be read and
/// tth::FormatError "<path>: <problem>" if it is not a well-formed image file with at most
/// `max_bytes` bytes of pixels.
IdxImages read_idx_images(const std::string& path, uint64_t max_bytes = kDefaultMaxBytes);
/// Reads an IDX1 label file (raw or gzip); labels outside 0..9 are a tth::FormatError.
IdxLabels read_idx_labels(const std::string& path, uint64_t max_bytes = kDefaultMaxBytes);

/// The same from a file's bytes in memory; `name` starts every message.
IdxImages parse_idx_images(const uint8_t* data, size_t size, const std::string& name,
                           uint64_t max_bytes = kDefaultMaxBytes);
IdxLabels parse_idx_labels(const uint8_t* data, size_t size, const std::string& name,
                           uint64_t max_bytes = kDefaultMaxBytes);

/// Throws tth::FormatError "<images_name> holds 60000 images but <labels_name> holds 59999
/// labels" unless the counts agree.
void check_same_count(const IdxImages& images, const std::string& images_name,
                      const IdxLabels& labels, const std::string& labels_name);

/// Where Debian's dataset-fashion-mnist installs Fashion-MNIST (gzip files).
inline constexpr char kDefaultDataDirectory[] = "/usr/share/datasets/fashion-mnist";

/// The paths of the four files of an MNIST-format dataset.
struct MnistFiles {
  std::string train_images;
  std::string train_labels;
  std::string test_images;
  std::string test_labels;
};

/// Finds the four standard files in `directory`, each under its standard name
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`; Fashion-MNIST and MNIST share them) or that name with `.gz`; when
/// both exist the raw file is taken (it reads faster). A missing file is a tth::Error naming
/// the path; for kDefaultDataDirectory it says which Debian package installs the data.
MnistFiles find_mnist_files(const std::string& directory);

}  // namespace mnist
