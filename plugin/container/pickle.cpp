#include "container/pickle.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "container/endian.h"
#include "container/zip_reader.h"
#include "tth/error.h"

namespace tth::container {
namespace {

// Opcodes (Python's Lib/pickle.py names).
constexpr uint8_t kProto = 0x80;
constexpr uint8_t kStop = '.';
constexpr uint8_t kGlobal = 'c';
constexpr uint8_t kReduce = 'R';
constexpr uint8_t kNewObj = 0x81;
constexpr uint8_t kBuild = 'b';
constexpr uint8_t kBinPersId = 'Q';
constexpr uint8_t kMark = '(';
constexpr uint8_t kEmptyTuple = ')';
constexpr uint8_t kTuple = 't';
constexpr uint8_t kTuple1 = 0x85;
constexpr uint8_t kTuple2 = 0x86;
constexpr uint8_t kTuple3 = 0x87;
constexpr uint8_t kEmptyDict = '}';
constexpr uint8_t kSetItem = 's';
constexpr uint8_t kSetItems = 'u';
constexpr uint8_t kBinPut = 'q';
constexpr uint8_t kLongBinPut = 'r';
constexpr uint8_t kBinGet = 'h';
constexpr uint8_t kLongBinGet = 'j';
constexpr uint8_t kBinInt = 'J';
constexpr uint8_t kBinInt1 = 'K';
constexpr uint8_t kBinInt2 = 'M';
constexpr uint8_t kLong1 = 0x8a;
constexpr uint8_t kBinFloat = 'G';
constexpr uint8_t kNewTrue = 0x88;
constexpr uint8_t kNewFalse = 0x89;
constexpr uint8_t kNone = 'N';
constexpr uint8_t kBinUnicode = 'X';

// The protocol LibTorch and torch.save (by default) write.
constexpr uint8_t kProtocol = 2;
// GLOBAL's module and name lines; the longest we accept is a __torch__ class path.
constexpr std::size_t kMaxGlobalLine = 256;
// _rebuild_tensor_v2's arguments, and the persistent id of a storage.
constexpr std::size_t kRebuildTensorArgs = 6;
constexpr std::size_t kStorageIdFields = 5;
constexpr std::size_t kMaxStorageKey = 64;
constexpr std::size_t kMaxLocation = 64;
// The format version entry's storage is read to decide about key decoding; a real one holds
// one element.
constexpr uint64_t kMaxVersionStorageBytes = 64;

constexpr std::string_view kPickleName = "data.pkl";
constexpr std::string_view kStorageDir = "data/";
constexpr std::string_view kTorchNamespace = "__torch__";

struct StorageName {
  StorageType type;
  const char* name;
  std::size_t size;
};
constexpr std::array<StorageName, 12> kStorageNames = {{
    {StorageType::kBool, "BoolStorage", 1},
    {StorageType::kUInt8, "ByteStorage", 1},
    {StorageType::kInt8, "CharStorage", 1},
    {StorageType::kInt16, "ShortStorage", 2},
    {StorageType::kInt32, "IntStorage", 4},
    {StorageType::kInt64, "LongStorage", 8},
    {StorageType::kFloat16, "HalfStorage", 2},
    {StorageType::kBFloat16, "BFloat16Storage", 2},
    {StorageType::kFloat32, "FloatStorage", 4},
    {StorageType::kFloat64, "DoubleStorage", 8},
    {StorageType::kComplexFloat, "ComplexFloatStorage", 8},
    {StorageType::kComplexDouble, "ComplexDoubleStorage", 16},
}};

const StorageName& storage_name(StorageType type) {
  for (const StorageName& entry : kStorageNames) {
    if (entry.type == type) return entry;
  }
  return kStorageNames[0];  // unreachable: every enumerator is listed
}

// Bytes of names and texts as they may appear in an error message: printable ASCII kept, the
// rest escaped, long ones cut.
std::string printable(std::string_view bytes) {
  constexpr std::size_t kMaxShown = 80;
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (bytes.size() > kMaxShown) out += "...";
  return out;
}

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool all_identifier_chars(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_identifier_char);
}

// ---- the interpreter ----

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kDouble,
  kString,
  kTuple,
  kDict,
  kObject,
  kGlobal,
  kStorage,
  kTensor
};

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "a bool";
    case Kind::kInt:
      return "an int";
    case Kind::kDouble:
      return "a float";
    case Kind::kString:
      return "a string";
    case Kind::kTuple:
      return "a tuple";
    case Kind::kDict:
      return "a dict";
    case Kind::kObject:
      return "a module object";
    case Kind::kGlobal:
      return "a global";
    case Kind::kStorage:
      return "a storage";
    case Kind::kTensor:
      return "a tensor";
  }
  return "a value";
}

enum class GlobalKind : uint8_t { kRebuildTensor, kOrderedDict, kStorageType, kClass };

struct Global {
  GlobalKind kind;
  StorageType type = StorageType::kFloat32;  // kStorageType
  std::string name;                          // "module.name", for messages
};

struct Object {
  std::string class_name;
  uint32_t state = 0;  // its dict's value id, once built
  bool built = false;
};

struct Storage {
  std::string key;
  StorageType type;
  uint64_t numel;
};

// One value. Leaves hold their content; containers an index into a table of their own.
struct Value {
  Kind kind = Kind::kNone;
  uint8_t depth = 0;    // nesting depth of containers; 0 for leaves
  uint32_t offset = 0;  // of the opcode that made it, for messages
  union {
    bool boolean;
    int64_t integer;
    double real;
    uint32_t index;  // strings, tuples, dicts, objects, globals, storages, tensors
  };
  Value() : integer(0) {}
};

class Interpreter {
 public:
  Interpreter(const uint8_t* data, std::size_t size, const std::string& context)
      : data_(data), size_(size), context_(context) {}

  std::vector<PickleAttribute> run() {
    if (size_ > kMaxPickleBytes) {
      fail(0, "the pickle has " + std::to_string(size_) + " bytes, more than the " +
                  std::to_string(kMaxPickleBytes) + " accepted");
    }
    while (true) {
      if (pos_ >= size_) fail(pos_, "the pickle ends without a STOP opcode (truncated)");
      op_offset_ = pos_;
      const uint8_t op = data_[pos_++];
      if (op == kStop) break;
      step(op);
    }
    if (pos_ != size_) {
      fail(pos_, std::to_string(size_ - pos_) + " bytes follow the STOP opcode");
    }
    if (!marks_.empty()) fail(op_offset_, "STOP with a MARK still open");
    if (stack_.size() != 1) {
      fail(op_offset_,
           "STOP with " + std::to_string(stack_.size()) + " values on the stack instead of one");
    }
    return attributes(stack_.back());
  }

 private:
  [[noreturn]] void fail(std::size_t offset, const std::string& problem) const {
    throw FormatError(context_ + ": byte " + std::to_string(offset) + ": " + problem);
  }

  // ---- reading operands ----

  const uint8_t* take(std::size_t n) {
    if (n > size_ - pos_) {
      fail(op_offset_, "the opcode's operand needs " + std::to_string(n) + " bytes, " +
                           std::to_string(size_ - pos_) + " remain (truncated)");
    }
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  std::string_view line() {
    const std::size_t limit = std::min(size_ - pos_, kMaxGlobalLine + 1);
    const auto* start = data_ + pos_;
    const void* newline = std::memchr(start, '\n', limit);
    if (newline == nullptr) {
      fail(op_offset_, "GLOBAL needs a module and a name of at most " +
                           std::to_string(kMaxGlobalLine) + " bytes, each ending with a newline");
    }
    const auto length = static_cast<std::size_t>(static_cast<const uint8_t*>(newline) - start);
    pos_ += length + 1;
    return {reinterpret_cast<const char*>(start), length};
  }

  // ---- values ----

  uint32_t make(Kind kind) {
    if (values_.size() >= kMaxValues) {
      fail(op_offset_, "more than " + std::to_string(kMaxValues) + " values");
    }
    Value value;
    value.kind = kind;
    value.offset = static_cast<uint32_t>(op_offset_);
    values_.push_back(value);
    return static_cast<uint32_t>(values_.size() - 1);
  }

  void push(uint32_t id) {
    if (stack_.size() >= kMaxStack) {
      fail(op_offset_, "more than " + std::to_string(kMaxStack) + " values on the stack");
    }
    stack_.push_back(id);
  }

  std::size_t stack_base() const { return marks_.empty() ? 0 : marks_.back(); }

  uint32_t top() const {
    if (stack_.size() <= stack_base()) {
      fail(op_offset_, "the opcode needs a value (stack underflow)");
    }
    return stack_.back();
  }

  uint32_t pop() {
    const uint32_t id = top();
    stack_.pop_back();
    return id;
  }

  // The values pushed since the last MARK, which is closed.
  std::vector<uint32_t> pop_mark() {
    if (marks_.empty()) fail(op_offset_, "the opcode needs a MARK, and none is open");
    const std::size_t base = marks_.back();
    marks_.pop_back();
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return items;
  }

  void nest(uint32_t container, uint32_t child) {
    const std::size_t depth = std::size_t{values_[child].depth} + 1;
    if (depth > kMaxDepth) {
      fail(op_offset_, "values nested more than " + std::to_string(kMaxDepth) + " levels deep");
    }
    values_[container].depth =
        static_cast<uint8_t>(std::max<std::size_t>(values_[container].depth, depth));
  }

  uint32_t make_tuple(std::vector<uint32_t> items) {
    const uint32_t id = make(Kind::kTuple);
    for (uint32_t item : items) nest(id, item);
    values_[id].index = static_cast<uint32_t>(tuples_.size());
    tuples_.push_back(std::move(items));
    return id;
  }

  uint32_t make_dict() {
    const uint32_t id = make(Kind::kDict);
    values_[id].index = static_cast<uint32_t>(dicts_.size());
    dicts_.emplace_back();
    return id;
  }

  void set_item(uint32_t dict, uint32_t key, uint32_t value) {
    nest(dict, key);
    nest(dict, value);
    dicts_[values_[dict].index].emplace_back(key, value);
  }

  const Value& value(uint32_t id) const { return values_[id]; }
  const std::vector<uint32_t>& tuple(uint32_t id) const { return tuples_[values_[id].index]; }
  const std::string& string(uint32_t id) const { return strings_[values_[id].index]; }

  const std::vector<uint32_t>& expect_tuple(uint32_t id, std::size_t size, const char* what) {
    if (value(id).kind != Kind::kTuple || tuple(id).size() != size) {
      fail(value(id).offset, std::string(what) + " must be a tuple of " + std::to_string(size) +
                                 ", got " + describe(id));
    }
    return tuple(id);
  }

  std::string describe(uint32_t id) const {
    const Value& v = value(id);
    switch (v.kind) {
      case Kind::kTuple:
        return "a tuple of " + std::to_string(tuple(id).size());
      case Kind::kGlobal:
        return "the global '" + globals_[v.index].name + "'";
      case Kind::kInt:
        return "the int " + std::to_string(v.integer);
      default:
        return kind_name(v.kind);
    }
  }

  int64_t expect_int(uint32_t id, const char* what) {
    if (value(id).kind != Kind::kInt)
      fail(value(id).offset, std::string(what) + " must be an int, got " + describe(id));
    return value(id).integer;
  }

  // ---- opcodes ----

  void step(uint8_t op) {
    switch (op) {
      case kProto: {
        const uint8_t version = *take(1);
        if (op_offset_ != 0) fail(op_offset_, "PROTO must be the first opcode");
        if (version != kProtocol) {
          fail(op_offset_, "pickle protocol " + std::to_string(version) + "; only " +
                               std::to_string(kProtocol) + " is accepted");
        }
        return;
      }
      case kNone:
        return push(make(Kind::kNone));
      case kNewTrue:
      case kNewFalse: {
        const uint32_t id = make(Kind::kBool);
        values_[id].boolean = op == kNewTrue;
        return push(id);
      }
      case kBinInt1:
        return push_int(*take(1));
      case kBinInt2:
        return push_int(load_le16(take(2)));
      case kBinInt:
        return push_int(static_cast<int32_t>(load_le32(take(4))));
      case kLong1:
        return push_long1();
      case kBinFloat: {
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        const uint32_t id = make(Kind::kDouble);
        std::memcpy(&values_[id].real, &bits, sizeof bits);
        return push(id);
      }
      case kBinUnicode: {
        const uint32_t length = load_le32(take(4));
        const uint8_t* p = take(length);
        const uint32_t id = make(Kind::kString);
        values_[id].index = static_cast<uint32_t>(strings_.size());
        strings_.emplace_back(reinterpret_cast<const char*>(p), length);
        return push(id);
      }
      case kGlobal:
        return push_global();
      case kMark:
        if (marks_.size() >= kMaxDepth) {
          fail(op_offset_, "more than " + std::to_string(kMaxDepth) + " MARKs open");
        }
        marks_.push_back(stack_.size());
        return;
      case kEmptyTuple:
        return push(make_tuple({}));
      case kTuple:
        return push(make_tuple(pop_mark()));
      case kTuple1:
      case kTuple2:
      case kTuple3: {
        std::vector<uint32_t> items(static_cast<std::size_t>(op - kTuple1) + 1);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
        return push(make_tuple(std::move(items)));
      }
      case kEmptyDict:
        return push(make_dict());
      case kSetItem: {
        const uint32_t item = pop();
        const uint32_t key = pop();
        return set_item(expect_dict(top(), "SETITEM"), key, item);
      }
      case kSetItems: {
        const std::vector<uint32_t> items = pop_mark();
        if (items.size() % 2 != 0) fail(op_offset_, "SETITEMS with an odd number of values");
        const uint32_t dict = expect_dict(top(), "SETITEMS");
        for (std::size_t i = 0; i < items.size(); i += 2) set_item(dict, items[i], items[i + 1]);
        return;
      }
      case kBinPut:
        return put(*take(1));
      case kLongBinPut:
        return put(load_le32(take(4)));
      case kBinGet:
        return get(*take(1));
      case kLongBinGet:
        return get(load_le32(take(4)));
      case kBinPersId:
        return push(storage(pop()));
      case kReduce: {
        const uint32_t args = pop();
        const uint32_t callable = pop();
        return push(reduce(callable, args));
      }
      case kNewObj: {
        const uint32_t args = pop();
        const uint32_t cls = pop();
        return push(new_object(cls, args));
      }
      case kBuild: {
        const uint32_t state = pop();
        return build(top(), state);
      }
      default:
        fail(op_offset_, "opcode 0x" + hex(op) + describe_opcode(op) +
                             " is not accepted (not written by LibTorch or torch.save "
                             "into a tensor archive)");
    }
  }

  static std::string hex(uint8_t byte) {
    static constexpr char kHex[] = "0123456789abcdef";
    return {kHex[byte >> 4], kHex[byte & 15]};
  }

  static std::string describe_opcode(uint8_t op) {
    if (op >= 0x20 && op < 0x7f) return std::string(" ('") + static_cast<char>(op) + "')";
    return "";
  }

  void push_int(int64_t integer) {
    const uint32_t id = make(Kind::kInt);
    values_[id].integer = integer;
    push(id);
  }

  void push_long1() {
    const uint8_t length = *take(1);
    if (length > sizeof(int64_t)) {
      fail(op_offset_, "LONG1 of " + std::to_string(length) + " bytes does not fit int64");
    }
    const uint8_t* p = take(length);
    uint64_t bits = 0;
    for (std::size_t i = length; i > 0; --i) bits = (bits << 8) | p[i - 1];
    if (length > 0 && length < sizeof(int64_t) && (p[length - 1] & 0x80) != 0) {
      bits |= ~uint64_t{0} << (8 * length);  // sign extension
    }
    int64_t integer;
    std::memcpy(&integer, &bits, sizeof integer);
    push_int(integer);
  }

  void push_global() {
    const std::string module(line());
    const std::string name(line());
    const uint32_t id = make(Kind::kGlobal);
    Global global{GlobalKind::kClass, StorageType::kFloat32, printable(module + "." + name)};
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      global.kind = GlobalKind::kRebuildTensor;
    } else if (module == "collections" && name == "OrderedDict") {
      global.kind = GlobalKind::kOrderedDict;
    } else if (module == "torch" && storage_type(name, global.type)) {
      global.kind = GlobalKind::kStorageType;
    } else if (torch_class(module, name)) {
      global.kind = GlobalKind::kClass;
    } else {
      fail(op_offset_, "GLOBAL '" + global.name +
                           "' is not allowed (a tensor archive names only "
                           "torch._utils._rebuild_tensor_v2, collections.OrderedDict, "
                           "torch.<T>Storage and __torch__ classes)");
    }
    values_[id].index = static_cast<uint32_t>(globals_.size());
    globals_.push_back(std::move(global));
    push(id);
  }

  // A TorchScript class: `__torch__` or `__torch__.<path>`, then a name. The path may hold
  // what TorchScript puts there (`<run_path>`, `___torch_mangle_3`); the class is a label only,
  // never looked up, but control bytes and spaces are still refused.
  static bool torch_class(const std::string& module, const std::string& name) {
    const auto graphic = [](std::string_view text) {
      return !text.empty() &&
             std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < '\x7f'; });
    };
    const std::string prefix = std::string(kTorchNamespace) + ".";
    return (module == kTorchNamespace ||
            (module.compare(0, prefix.size(), prefix) == 0 && graphic(module))) &&
           graphic(name);
  }

  static bool storage_type(const std::string& name, StorageType& type) {
    for (const StorageName& entry : kStorageNames) {
      if (name == entry.name) {
        type = entry.type;
        return true;
      }
    }
    return false;
  }

  uint32_t expect_dict(uint32_t id, const char* what) {
    if (value(id).kind != Kind::kDict) {
      fail(op_offset_, std::string(what) + " needs a dict below its values, got " + describe(id));
    }
    return id;
  }

  void put(uint32_t index) {
    const uint32_t id = top();
    if (index > memo_.size()) {
      fail(op_offset_, "memo index " + std::to_string(index) + " skips ahead of the " +
                           std::to_string(memo_.size()) + " entries assigned so far");
    }
    if (index == memo_.size()) {
      if (memo_.size() >= kMaxValues) {
        fail(op_offset_, "more than " + std::to_string(kMaxValues) + " memo entries");
      }
      memo_.push_back(id);
    } else {
      memo_[index] = id;
    }
  }

  void get(uint32_t index) {
    if (index >= memo_.size()) {
      fail(op_offset_, "memo index " + std::to_string(index) + " was never assigned (" +
                           std::to_string(memo_.size()) + " entries)");
    }
    push(memo_[index]);
  }

  // BINPERSID: ('storage', torch.<T>Storage, key, location, numel).
  uint32_t storage(uint32_t pid) {
    const auto& fields = expect_tuple(pid, kStorageIdFields, "a persistent id");
    if (value(fields[0]).kind != Kind::kString || string(fields[0]) != "storage") {
      fail(op_offset_, "a persistent id must start with 'storage', got " + describe(fields[0]));
    }
    const Value& type = value(fields[1]);
    if (type.kind != Kind::kGlobal || globals_[type.index].kind != GlobalKind::kStorageType) {
      fail(op_offset_, "a storage's type must be torch.<T>Storage, got " + describe(fields[1]));
    }
    if (value(fields[2]).kind != Kind::kString || string(fields[2]).size() > kMaxStorageKey ||
        !all_identifier_chars(string(fields[2]))) {
      fail(op_offset_,
           "a storage's key must be a string of letters, digits and '_', got " +
               (value(fields[2]).kind == Kind::kString ? "'" + printable(string(fields[2])) + "'"
                                                       : describe(fields[2])));
    }
    if (value(fields[3]).kind != Kind::kString || string(fields[3]).size() > kMaxLocation) {
      fail(op_offset_, "a storage's location must be a short string, got " + describe(fields[3]));
    }
    const int64_t numel = expect_int(fields[4], "a storage's element count");
    if (numel < 0) {
      fail(op_offset_, "a storage's element count must be >= 0, got " + std::to_string(numel));
    }
    Storage storage{string(fields[2]), globals_[type.index].type, static_cast<uint64_t>(numel)};
    const uint32_t id = make(Kind::kStorage);  // may move values_: `type` is not used after
    values_[id].index = static_cast<uint32_t>(storages_.size());
    storages_.push_back(std::move(storage));
    return id;
  }

  uint32_t reduce(uint32_t callable, uint32_t args) {
    const Value& target = value(callable);
    if (target.kind != Kind::kGlobal ||
        (globals_[target.index].kind != GlobalKind::kRebuildTensor &&
         globals_[target.index].kind != GlobalKind::kOrderedDict)) {
      fail(op_offset_,
           "REDUCE may call only torch._utils._rebuild_tensor_v2 or "
           "collections.OrderedDict, not " +
               describe(callable));
    }
    if (globals_[target.index].kind == GlobalKind::kOrderedDict) {
      expect_tuple(args, 0, "OrderedDict's arguments");
      return make_dict();
    }
    return rebuild_tensor(args);
  }

  std::vector<int64_t> int_tuple(uint32_t id, const char* what) {
    const Value& v = value(id);
    if (v.kind != Kind::kTuple)
      fail(v.offset, std::string(what) + " must be a tuple, got " + describe(id));
    const auto& items = tuple(id);
    if (items.size() > kMaxDims) {
      fail(v.offset, std::string(what) + " has " + std::to_string(items.size()) +
                         " dimensions, more than " + std::to_string(kMaxDims));
    }
    std::vector<int64_t> out;
    out.reserve(items.size());
    for (uint32_t item : items) {
      const int64_t n = expect_int(item, what);
      if (n < 0) {
        fail(value(item).offset,
             std::string(what) + " must hold ints >= 0, got " + std::to_string(n));
      }
      out.push_back(n);
    }
    return out;
  }

  uint32_t rebuild_tensor(uint32_t args) {
    const auto& a = expect_tuple(args, kRebuildTensorArgs, "_rebuild_tensor_v2's arguments");
    if (value(a[0]).kind != Kind::kStorage) {
      fail(op_offset_, "a tensor's storage must come from a persistent id, got " + describe(a[0]));
    }
    const Storage& storage = storages_[value(a[0]).index];
    TensorRef tensor;
    tensor.storage_key = storage.key;
    tensor.type = storage.type;
    tensor.storage_numel = storage.numel;
    tensor.offset = expect_int(a[1], "a tensor's storage offset");
    tensor.sizes = int_tuple(a[2], "a tensor's size");
    tensor.strides = int_tuple(a[3], "a tensor's stride");
    if (value(a[4]).kind != Kind::kBool) {
      fail(op_offset_, "a tensor's requires_grad must be a bool, got " + describe(a[4]));
    }
    if (value(a[5]).kind != Kind::kDict || !dicts_[value(a[5]).index].empty()) {
      fail(op_offset_, "a tensor's backward hooks must be an empty dict, got " + describe(a[5]));
    }
    if (tensor.sizes.size() != tensor.strides.size()) {
      fail(op_offset_, "a tensor has " + std::to_string(tensor.sizes.size()) + " sizes but " +
                           std::to_string(tensor.strides.size()) + " strides");
    }
    if (!tensor_in_bounds(tensor)) {
      fail(op_offset_, "a tensor (offset " + std::to_string(tensor.offset) + ", size (" +
                           join(tensor.sizes) + "), stride (" + join(tensor.strides) +
                           ")) addresses elements outside its storage '" + storage.key + "' of " +
                           std::to_string(storage.numel) + " elements");
    }
    const uint32_t id = make(Kind::kTensor);
    values_[id].index = static_cast<uint32_t>(tensors_.size());
    tensors_.push_back(std::move(tensor));
    return id;
  }

  static std::string join(const std::vector<int64_t>& numbers) {
    std::string out;
    for (std::size_t i = 0; i < numbers.size(); ++i) {
      if (i > 0) out += ", ";
      out += std::to_string(numbers[i]);
    }
    return out;
  }

  uint32_t new_object(uint32_t cls, uint32_t args) {
    const Value& target = value(cls);
    if (target.kind != Kind::kGlobal || globals_[target.index].kind != GlobalKind::kClass) {
      fail(op_offset_, "NEWOBJ may build only a __torch__ class, not " + describe(cls));
    }
    expect_tuple(args, 0, "NEWOBJ's arguments");
    Object object{globals_[target.index].name};
    const uint32_t id = make(Kind::kObject);  // may move values_: `target` is not used after
    values_[id].index = static_cast<uint32_t>(objects_.size());
    objects_.push_back(std::move(object));
    return id;
  }

  void build(uint32_t target, uint32_t state) {
    if (value(state).kind != Kind::kDict) {
      fail(op_offset_, "BUILD's state must be a dict, got " + describe(state));
    }
    const Value& v = value(target);
    if (v.kind == Kind::kDict) return;  // an OrderedDict's attributes (_metadata): not state
    if (v.kind != Kind::kObject) fail(op_offset_, "BUILD of " + describe(target));
    Object& object = objects_[v.index];
    if (object.built) fail(op_offset_, "BUILD of a module object that was built already");
    nest(target, state);
    object.state = state;
    object.built = true;
  }

  // ---- the result ----

  std::vector<PickleAttribute> attributes(uint32_t root) {
    const Value& v = value(root);
    uint32_t dict = root;
    if (v.kind == Kind::kObject) {
      if (!objects_[v.index].built) fail(v.offset, "the module object has no state (no BUILD)");
      dict = objects_[v.index].state;
    } else if (v.kind != Kind::kDict) {
      fail(v.offset, "the pickle holds " + describe(root) + ", not a module object or a dict");
    }
    std::vector<PickleAttribute> out;
    std::unordered_set<std::string> names;
    for (const auto& [key, item] : dicts_[value(dict).index]) {
      if (value(key).kind != Kind::kString) {
        fail(value(key).offset, "an attribute name must be a string, got " + describe(key));
      }
      const std::string& name = string(key);
      if (!names.insert(name).second) {
        fail(value(key).offset, "the attribute '" + printable(name) + "' appears twice");
      }
      const Value& x = value(item);
      PickleAttribute attribute;
      attribute.name = name;
      PickleValue& out_value = attribute.value;
      switch (x.kind) {
        case Kind::kNone:
          continue;
        case Kind::kBool:
          out_value.kind = PickleValue::Kind::kBool;
          out_value.boolean = x.boolean;
          break;
        case Kind::kInt:
          out_value.kind = PickleValue::Kind::kInt;
          out_value.integer = x.integer;
          break;
        case Kind::kDouble:
          out_value.kind = PickleValue::Kind::kDouble;
          out_value.real = x.real;
          break;
        case Kind::kString:
          out_value.kind = PickleValue::Kind::kString;
          out_value.text = string(item);
          break;
        case Kind::kTensor:
          out_value.kind = PickleValue::Kind::kTensor;
          out_value.tensor = tensors_[x.index];
          break;
        default:
          fail(x.offset, "the attribute '" + printable(name) + "' holds " + describe(item) +
                             ", which a snapshot entry cannot be");
      }
      out.push_back(std::move(attribute));
    }
    return out;
  }

  const uint8_t* data_;
  std::size_t size_;
  const std::string& context_;
  std::size_t pos_ = 0;
  std::size_t op_offset_ = 0;

  std::vector<Value> values_;
  std::vector<uint32_t> stack_;
  std::vector<std::size_t> marks_;  // stack sizes at each open MARK
  std::vector<uint32_t> memo_;
  std::vector<std::string> strings_;
  std::vector<std::vector<uint32_t>> tuples_;
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> dicts_;
  std::vector<Object> objects_;
  std::vector<Global> globals_;
  std::vector<Storage> storages_;
  std::vector<TensorRef> tensors_;
};

// ---- keys ----

bool plain_key_char(char c) {
  return is_identifier_char(c) || c == '.' || c == '/' || c == ':' || c == '-';
}

// Names that TorchScript cannot take as a bare attribute name: its keywords (Python's), and the
// module metadata names it would confuse the attribute with.
bool reserved_name(std::string_view key) {
  static const std::unordered_set<std::string_view> kReserved = {"False",       "None",
                                                                 "True",        "and",
                                                                 "as",          "assert",
                                                                 "async",       "await",
                                                                 "break",       "class",
                                                                 "continue",    "def",
                                                                 "del",         "elif",
                                                                 "else",        "except",
                                                                 "finally",     "for",
                                                                 "from",        "global",
                                                                 "if",          "import",
                                                                 "in",          "is",
                                                                 "lambda",      "nonlocal",
                                                                 "not",         "or",
                                                                 "pass",        "raise",
                                                                 "return",      "try",
                                                                 "while",       "with",
                                                                 "yield",       "__parameters__",
                                                                 "__buffers__", "__annotations__"};
  return kReserved.count(key) != 0;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The value of the format version entry, or -1 if it is not a small integer we can read.
int64_t format_version(const ZipReader& reader, const TorchArchiveLayout& layout,
                       std::string_view version_key) {
  for (const auto& entry : layout.entries) {
    if (entry.key != version_key) continue;
    if (entry.value.kind == PickleValue::Kind::kInt) return entry.value.integer;
    if (entry.value.kind != PickleValue::Kind::kTensor) return -1;
    const TensorRef& tensor = entry.value.tensor;
    const auto& storage = layout.storages[entry.storage];
    const std::size_t element = storage_element_size(storage.type);
    const bool integer = storage.type == StorageType::kUInt8 ||
                         storage.type == StorageType::kInt8 ||
                         storage.type == StorageType::kInt16 ||
                         storage.type == StorageType::kInt32 || storage.type == StorageType::kInt64;
    if (!tensor.sizes.empty() || !integer ||
        storage.entry->uncompressed_size > kMaxVersionStorageBytes) {
      return -1;
    }
    const std::vector<uint8_t> bytes = reader.read_all(*storage.entry);
    const uint64_t at = static_cast<uint64_t>(tensor.offset) * element;  // in bounds: checked
    if (at + element > bytes.size()) return -1;
    uint64_t bits = 0;
    for (std::size_t i = element; i > 0; --i) bits = (bits << 8) | bytes[at + i - 1];
    if (storage.type != StorageType::kUInt8 && element < sizeof(bits) &&
        (bytes[at + element - 1] & 0x80) != 0) {
      bits |= ~uint64_t{0} << (8 * element);
    }
    int64_t value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  return -1;
}

}  // namespace

std::size_t storage_element_size(StorageType type) { return storage_name(type).size; }

const char* storage_type_name(StorageType type) { return storage_name(type).name; }

std::vector<PickleAttribute> parse_tensor_pickle(const uint8_t* data, std::size_t size,
                                                 const std::string& context) {
  return Interpreter(data, size, context).run();
}

bool tensor_numel(const std::vector<int64_t>& sizes, uint64_t& numel) {
  uint64_t product = 1;
  for (int64_t size : sizes) {
    if (size < 0) return false;
    if (__builtin_mul_overflow(product, static_cast<uint64_t>(size), &product)) return false;
  }
  if (product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  numel = product;
  return true;
}

bool tensor_in_bounds(const TensorRef& tensor) {
  if (tensor.offset < 0 || tensor.sizes.size() != tensor.strides.size()) return false;
  for (int64_t stride : tensor.strides) {
    if (stride < 0) return false;
  }
  uint64_t numel = 0;
  if (!tensor_numel(tensor.sizes, numel)) return false;
  const auto offset = static_cast<uint64_t>(tensor.offset);
  if (numel == 0) return offset <= tensor.storage_numel;
  uint64_t last = offset;
  for (std::size_t i = 0; i < tensor.sizes.size(); ++i) {
    uint64_t step = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(tensor.sizes[i] - 1),
                               static_cast<uint64_t>(tensor.strides[i]), &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return false;
    }
  }
  return last < tensor.storage_numel;
}

std::string encode_archive_key(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size());
  const bool reserved = reserved_name(key);
  for (std::size_t i = 0; i < key.size(); ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (plain_key_char(static_cast<char>(c)) && !(reserved && i == 0)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool storable_unencoded(std::string_view key) {
  return !reserved_name(key) && std::none_of(key.begin(), key.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return c == '"' || c == '\\' || byte < 0x20 || byte == 0x7f;
  });
}

std::string decode_archive_key(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size() && hex_digit(name[i + 1]) >= 0 &&
        hex_digit(name[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(name[i + 1]) * 16 + hex_digit(name[i + 2]));
      i += 2;
    } else {
      out += name[i];
    }
  }
  return out;
}

TorchArchiveLayout read_torch_archive(const ZipReader& reader, std::string_view version_key) {
  const ZipEntry* pickle = nullptr;
  std::size_t pickles = 0;
  for (const ZipEntry& entry : reader.entries()) {
    const std::size_t slash = entry.name.find('/');
    if (slash == std::string::npos || slash == 0 ||
        std::string_view(entry.name).substr(slash + 1) != kPickleName) {
      continue;
    }
    ++pickles;
    pickle = &entry;
  }
  if (pickles != 1) {
    throw FormatError(reader.label() + ": " +
                      (pickles == 0
                           ? std::string("holds no '<dir>/data.pkl' member")
                           : "holds " + std::to_string(pickles) + " '<dir>/data.pkl' members") +
                      ": not a LibTorch archive");
  }
  TorchArchiveLayout layout;
  layout.directory = pickle->name.substr(0, pickle->name.size() - kPickleName.size());
  const std::string context = reader.label() + ": member '" + printable(pickle->name) + "'";
  if (pickle->uncompressed_size > kMaxPickleBytes) {
    throw FormatError(context + ": " + std::to_string(pickle->uncompressed_size) +
                      " bytes, more than the " + std::to_string(kMaxPickleBytes) + " accepted");
  }
  const std::vector<uint8_t> bytes = reader.read_all(*pickle);
  std::vector<PickleAttribute> attributes =
      parse_tensor_pickle(bytes.data(), bytes.size(), context);

  std::unordered_map<std::string, std::size_t> storage_index;
  for (PickleAttribute& attribute : attributes) {
    TorchArchiveLayout::Entry entry;
    entry.key = std::move(attribute.name);
    entry.value = std::move(attribute.value);
    if (entry.value.kind == PickleValue::Kind::kTensor) {
      const TensorRef& tensor = entry.value.tensor;
      const std::string where = reader.label() + ": key '" + printable(entry.key) + "'";
      const auto found = storage_index.find(tensor.storage_key);
      if (found != storage_index.end()) {
        const auto& storage = layout.storages[found->second];
        if (storage.type != tensor.type || storage.numel != tensor.storage_numel) {
          throw FormatError(where + ": storage '" + tensor.storage_key + "' is used as " +
                            storage_type_name(tensor.type) + " of " +
                            std::to_string(tensor.storage_numel) + " elements and as " +
                            storage_type_name(storage.type) + " of " +
                            std::to_string(storage.numel));
        }
        entry.storage = found->second;
      } else {
        const std::string member = layout.directory + std::string(kStorageDir) + tensor.storage_key;
        const ZipEntry* data = reader.find(member);
        if (data == nullptr) {
          throw FormatError(where + ": its storage member '" + printable(member) + "' is missing");
        }
        uint64_t bytes_needed = 0;
        const bool overflow = __builtin_mul_overflow(
            tensor.storage_numel, static_cast<uint64_t>(storage_element_size(tensor.type)),
            &bytes_needed);
        if (overflow || bytes_needed != data->uncompressed_size) {
          throw FormatError(
              where + ": storage member '" + printable(member) + "' holds " +
              std::to_string(data->uncompressed_size) + " bytes, but " +
              std::to_string(tensor.storage_numel) + " elements of " +
              storage_type_name(tensor.type) + " need " +
              (overflow ? std::string("more than 2^64") : std::to_string(bytes_needed)));
        }
        entry.storage = layout.storages.size();
        storage_index.emplace(tensor.storage_key, entry.storage);
        layout.storages.push_back({tensor.storage_key, data, tensor.type, tensor.storage_numel});
      }
    }
    layout.entries.push_back(std::move(entry));
  }

  const int64_t version = format_version(reader, layout, version_key);
  layout.keys_encoded = !(version >= 1 && version <= kLastUnencodedKeysVersion);
  if (layout.keys_encoded) {
    std::unordered_set<std::string> keys;
    for (auto& entry : layout.entries) {
      std::string key = decode_archive_key(entry.key);
      if (!keys.insert(key).second) {
        throw FormatError(reader.label() + ": two entries decode to the key '" + printable(key) +
                          "'");
      }
      entry.key = std::move(key);
    }
  }
  return layout;
}

}  // namespace tth::container
