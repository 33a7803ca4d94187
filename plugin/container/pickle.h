// A restricted reader of the pickles inside LibTorch, TorchScript and PyTorch tensor archives,
// and the archive layout around them. LibTorch-free: the tensor glue (torch_archive.h) builds
// tensors from what this returns.
//
// A tensor archive is a zip: `<dir>/data.pkl`, a pickle of one object, and one member
// `<dir>/data/<key>` per storage holding its raw little-endian elements. LibTorch's
// `OutputArchive` (our torch_savefun) and Python's `torch.jit.save` pickle a module object
// (`__torch__.<Class>`) whose attributes are tensors, scalars, strings, None, lists and
// submodule objects; Python's `torch.save` pickles a dict (an OrderedDict for a state dict),
// possibly nested, possibly with lists (an optimizer's state dict). Loading such a pickle with a
// general unpickler runs whatever callables it names, so this reader is not one: it interprets
// exactly the constructs those writers emit and refuses everything else with a
// tth::FormatError "<context>: byte <offset>: <problem>".
//
//   opcodes   PROTO 2 (first), STOP (last byte), GLOBAL, REDUCE, NEWOBJ, BUILD, BINPERSID,
//             MARK, EMPTY_TUPLE, TUPLE, TUPLE1-3, EMPTY_LIST, LIST, APPEND, APPENDS,
//             EMPTY_DICT, SETITEM, SETITEMS, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET, BININT,
//             BININT1, BININT2, LONG1 (<= 8 bytes), BINFLOAT, NEWTRUE, NEWFALSE, NONE,
//             BINUNICODE. Not sets, frames, bytes, protocol 0/1 forms (INST, OBJ, PUT, GET,
//             ...), protocol 4 and 5 forms, or extensions.
//   globals   torch._utils._rebuild_tensor_v2 (REDUCE with the six arguments below, or seven
//             with a dict of Python attributes, as PyTorch 2 writes), torch._utils.
//             _rebuild_parameter (a tensor, a bool, an empty dict: the tensor),
//             collections.OrderedDict (REDUCE with no arguments: an empty dict; BUILD of its
//             `_metadata` is ignored), torch.<T>Storage (only inside a persistent id),
//             torch.jit._pickle.build_{int,double,bool,tensor}list (REDUCE of a list: the
//             list) and restore_type_tag (REDUCE of a value and a type string: the value),
//             and classes of the `__torch__` namespace (`__torch__[.<path>] <Name>`, printable
//             without spaces; only as NEWOBJ with no arguments, then BUILD with a dict).
//             Nothing is ever called or imported: a name is a label. Not quantized or sparse
//             tensors, numpy scalars, builtins, os, or anything else.
//   tensors   _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//             backward_hooks): a storage from a persistent id
//             ('storage', torch.<T>Storage, key, location, numel), a non-negative int offset,
//             tuples of non-negative ints (at most kMaxDims), a bool (ignored) and an empty
//             dict. The elements addressed, offset + sum((size[i] - 1) * stride[i]), must lie
//             inside the storage's numel (computed without overflow) before any memory exists.
//
// The result is flat: every leaf below the root (a module object, a dict, a list or a tuple)
// with its path. Components are attribute names, dict keys (strings, or ints written in
// decimal) and list indices, joined with '.' below a module object (as Python's state_dict()
// names a submodule's parameters: `0.weight`) and '/' below anything else
// (`model/fc.weight`, `state/0/exp_avg`). Leaves are None, bools, ints, floats, strings and
// tensors; two leaves with one path are an error.
//
// Bounds: the pickle's size (kMaxPickleBytes), values made and items put into containers
// (kMaxValues each), stack items (kMaxStack), open MARKs and nesting depth (kMaxDepth), memo
// entries (assigned in order, as pickle writes them, so an index never reserves memory), string
// lengths (against the bytes present), and, because memo references let one value appear many
// times (even inside itself), the values reached while flattening (kMaxValues, counted before
// a container's children are listed), the key lengths (kMaxKeyBytes, and kMaxTotalKeyBytes
// in all), the texts (kMaxPickleBytes in all), the tensors' dimensions (kMaxValues in all) and
// the leaves (kMaxEntries) of the result. So memory is bounded by those constants (about 1.5 GB
// at the very worst, whatever the file; a real state dict needs a few times its pickle's size).
// The MARK limit caps a TorchScript module's nesting near 28 levels (real models nest 6 to 10). The
// reader keeps every value in one flat table and never recurses, so no input depth can exhaust the
// stack.
//
// Thread safety: the functions are reentrant; they share no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tth::container {

class ZipReader;
struct ZipEntry;

/// Largest data.pkl accepted (a pickle of thousands of tensors is a few hundred KiB).
inline constexpr std::size_t kMaxPickleBytes = std::size_t{256} << 20;
/// Most values (ints, strings, tuples, ...) one pickle may create.
inline constexpr std::size_t kMaxValues = std::size_t{1} << 22;
/// Most items on the unpickling stack at once.
inline constexpr std::size_t kMaxStack = std::size_t{1} << 20;
/// Deepest nesting of containers, and most MARKs open at once (tensor archives need 3).
inline constexpr std::size_t kMaxDepth = 32;
/// Most dimensions of a tensor.
inline constexpr std::size_t kMaxDims = 64;
/// Longest key of the flattened result.
inline constexpr std::size_t kMaxKeyBytes = std::size_t{1} << 16;
/// Most bytes of all keys of the flattened result together.
inline constexpr std::size_t kMaxTotalKeyBytes = std::size_t{64} << 20;
/// Most leaves in the flattened result.
inline constexpr std::size_t kMaxEntries = std::size_t{1} << 20;

/// Element types of the storages a tensor archive may hold, named as torch.<T>Storage.
enum class StorageType {
  kBool,           ///< BoolStorage
  kUInt8,          ///< ByteStorage
  kInt8,           ///< CharStorage
  kInt16,          ///< ShortStorage
  kInt32,          ///< IntStorage
  kInt64,          ///< LongStorage
  kFloat16,        ///< HalfStorage
  kBFloat16,       ///< BFloat16Storage
  kFloat32,        ///< FloatStorage
  kFloat64,        ///< DoubleStorage
  kComplexFloat,   ///< ComplexFloatStorage
  kComplexDouble,  ///< ComplexDoubleStorage
};

/// Bytes per element of `type`.
std::size_t storage_element_size(StorageType type);
/// "FloatStorage", ...
const char* storage_type_name(StorageType type);

/// A tensor as the pickle describes it; its elements are in the storage member `storage_key`.
struct TensorRef {
  std::string storage_key;                   ///< `<dir>/data/<storage_key>` holds the elements.
  StorageType type = StorageType::kFloat32;  ///< Element type (of the storage and the tensor).
  uint64_t storage_numel = 0;                ///< Elements in the storage.
  int64_t offset = 0;                        ///< First element, in elements; >= 0.
  std::vector<int64_t> sizes;                ///< Dimensions, each >= 0; empty for 0-d.
  std::vector<int64_t> strides;              ///< In elements, each >= 0; as many as sizes.
};

/// One attribute value: what a snapshot entry can be.
struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kDouble, kString, kTensor };
  Kind kind = Kind::kInt;
  bool boolean = false;  ///< kBool
  int64_t integer = 0;   ///< kInt
  double real = 0;       ///< kDouble
  std::string text;      ///< kString (bytes as stored; LibTorch writes UTF-8)
  TensorRef tensor;      ///< kTensor
};

/// A leaf of the pickled object with its path.
struct PickleAttribute {
  std::string name;  ///< The path, components as stored (see decode_archive_key).
  PickleValue value;
  /// Whether it is an attribute of the root module object or of a submodule reached through
  /// module objects only (a parameter, a buffer or another attribute), not an item of a dict,
  /// list or tuple.
  bool module_attribute = false;
};

/// What a pickle holds.
struct PickleContents {
  bool module = false;     ///< The root is a module object (else a dict, a list or a tuple).
  std::string root_class;  ///< The module object's class, "<module>.<name>" ("" for others).
  std::vector<PickleAttribute> attributes;  ///< Every leaf, depth first, in pickle order.
};

/// Interprets `data[0, size)` as described above. An attribute name or dict key that is not a
/// string (or an int, in a dict), a path that appears twice, a leaf that is not a PickleValue
/// (a storage, a global), a tensor addressing elements outside its storage, and every refused
/// construct is a tth::FormatError "<context>: byte <offset>: <problem>".
PickleContents parse_pickle(const uint8_t* data, std::size_t size, const std::string& context);
/// parse_pickle(...).attributes.
std::vector<PickleAttribute> parse_tensor_pickle(const uint8_t* data, std::size_t size,
                                                 const std::string& context);

/// Elements of a tensor with `sizes` (1 for 0-d); false if the product overflows int64.
bool tensor_numel(const std::vector<int64_t>& sizes, uint64_t& numel);
/// Whether `tensor` addresses only elements in [0, storage_numel): offset, sizes and strides
/// non-negative, as many strides as sizes, and the last element addressed, computed without
/// overflow, inside the storage. An empty tensor needs offset <= storage_numel.
bool tensor_in_bounds(const TensorRef& tensor);

// ---- keys ----
//
// LibTorch writes each attribute name into the archive's TorchScript source unescaped, so a
// name with '"', '\' or a newline makes the archive unloadable by torch.jit.load, and a few
// plain names break it too (Python keywords, `__parameters__`). torch_savefun therefore stores
// every key percent-encoded: each byte outside [A-Za-z0-9_./:-] becomes %XX (uppercase hex, '%'
// itself included), and so does the first byte of a key that equals a Python keyword or a
// module metadata name. Python gets the keys back with urllib.parse.unquote.

/// The name under which torch_savefun stores `key`.
std::string encode_archive_key(std::string_view key);
/// The key stored as `name`: each %XX (two hex digits) becomes that byte; any other '%' stays,
/// so names that were never encoded (Python's, or without '%') come back unchanged.
std::string decode_archive_key(std::string_view name);
/// Whether `key` can be stored unencoded, as format version 1 stored keys: no '"', '\' or
/// control byte, and not a name TorchScript cannot take bare.
bool storable_unencoded(std::string_view key);
/// The class of the module object that LibTorch's OutputArchive (so torch_savefun) writes.
inline constexpr std::string_view kArchiveClass = "__torch__.Module";
/// Snapshot format versions up to this one stored keys unencoded; later ones (and archives
/// without a version entry, as torch_savefun writes them outside snapshots) encode them.
inline constexpr int64_t kLastUnencodedKeysVersion = 1;

// ---- the archive around the pickle ----

/// A tensor archive, checked: every storage a tensor uses exists with exactly its size, and
/// every tensor lies inside its storage. Nothing has been read but data.pkl (and the storage
/// of the format version entry, a few bytes).
struct TorchArchiveLayout {
  /// A storage member: the tensors that share it are views of one allocation.
  struct Storage {
    std::string key;                  ///< Its key in the pickle.
    const ZipEntry* entry = nullptr;  ///< The member `<dir>/data/<key>` (owned by the reader).
    StorageType type = StorageType::kFloat32;
    uint64_t numel = 0;  ///< entry->uncompressed_size == numel * element size.
  };
  /// A snapshot entry; kNone values are listed too.
  struct Entry {
    std::string key;                ///< Decoded when the archive's keys are encoded.
    PickleValue value;              ///< A tensor's storage is storages[storage].
    std::size_t storage = 0;        ///< For kTensor.
    bool module_attribute = false;  ///< PickleAttribute::module_attribute.
  };
  std::string directory;  ///< `<dir>/`, the archive's top-level directory.
  bool module = false;    ///< data.pkl holds a module object (TorchScript), not a dict.
  std::vector<Storage> storages;
  std::vector<Entry> entries;
  bool keys_encoded = true;  ///< Whether names were decoded (see kLastUnencodedKeysVersion).
};

/// Finds the one top-level `<dir>/data.pkl` of `reader`'s archive, parses it, checks every
/// storage it references, and decodes the names if torch_savefun wrote them: the root is a
/// module object of LibTorch's archive class, kArchiveClass, and the entry `version_key` holds
/// no version <= kLastUnencodedKeysVersion (Python's names, TorchScript's and a dict's keys are
/// as given). Throws
/// tth::FormatError naming the file and the member (or the key): no or several data.pkl, a refused
/// pickle, a missing storage member, a storage whose size is not numel * element size, one key used
/// with two types or sizes, two entries with one name after decoding, a `<dir>/byteorder` member
/// other than "little" (PyTorch 2 writes it).
TorchArchiveLayout read_torch_archive(const ZipReader& reader, std::string_view version_key);

}  // namespace tth::container
