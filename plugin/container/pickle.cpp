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
constexpr uint8_t kEmptyList = ']';
constexpr uint8_t kList = 'l';
constexpr uint8_t kAppend = 'a';
constexpr uint8_t kAppends = 'e';

// The protocol LibTorch and torch.save (by default) write.
constexpr uint8_t kProtocol = 2;
// GLOBAL's module and name lines; the longest we accept is a __torch__ class path.
constexpr std::size_t kMaxGlobalLine = 256;
// _rebuild_tensor_v2's arguments, and the persistent id of a storage.
constexpr std::size_t kRebuildTensorArgs = 6;
// torch.save of PyTorch 2.x adds a seventh, a dict of the tensor's Python attributes.
constexpr std::size_t kRebuildTensorArgsWithMetadata = 7;
constexpr std::size_t kRebuildParameterArgs = 3;
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
  kList,
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
    case Kind::kList:
      return "a list";
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

enum class GlobalKind : uint8_t {
  kRebuildTensor,     // torch._utils._rebuild_tensor_v2
  kRebuildParameter,  // torch._utils._rebuild_parameter: the tensor it wraps
  kOrderedDict,       // collections.OrderedDict
  kStorageType,       // torch.<T>Storage
  kClass,             // a __torch__ class
  kTypedList,         // torch.jit._pickle.build_{int,double,bool,tensor}list: the list given
  kTypeTag,           // torch.jit._pickle.restore_type_tag: the value given
};

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

  PickleContents run() {
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
    return flatten(stack_.back());
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

  uint32_t make_tuple(std::vector<uint32_t> items, Kind kind = Kind::kTuple) {
    contain(items.size());
    const uint32_t id = make(kind);
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

  // Container items cost memory without making values (BINGET pushes a reference): counted.
  void contain(std::size_t items) {
    if (items > kMaxValues - contained_) {
      fail(op_offset_, "more than " + std::to_string(kMaxValues) + " items in containers");
    }
    contained_ += items;
  }

  void set_item(uint32_t dict, uint32_t key, uint32_t value) {
    contain(1);
    nest(dict, key);
    nest(dict, value);
    dicts_[values_[dict].index].emplace_back(key, value);
  }

  const Value& value(uint32_t id) const { return values_[id]; }
  // Tuples and lists.
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
      case Kind::kList:
        return "a list of " + std::to_string(tuple(id).size());
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
      case kEmptyList:
        return push(make_tuple({}, Kind::kList));
      case kList:
        return push(make_tuple(pop_mark(), Kind::kList));
      case kAppend: {
        const uint32_t item = pop();
        return append(expect_list(top(), "APPEND"), item);
      }
      case kAppends: {
        const std::vector<uint32_t> items = pop_mark();
        const uint32_t list = expect_list(top(), "APPENDS");
        for (uint32_t item : items) append(list, item);
        return;
      }
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
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      global.kind = GlobalKind::kRebuildParameter;
    } else if (module == "torch.jit._pickle" &&
               (name == "build_intlist" || name == "build_doublelist" || name == "build_boollist" ||
                name == "build_tensorlist")) {
      global.kind = GlobalKind::kTypedList;
    } else if (module == "torch.jit._pickle" && name == "restore_type_tag") {
      global.kind = GlobalKind::kTypeTag;
    } else if (module == "collections" && name == "OrderedDict") {
      global.kind = GlobalKind::kOrderedDict;
    } else if (module == "torch" && storage_type(name, global.type)) {
      global.kind = GlobalKind::kStorageType;
    } else if (torch_class(module, name)) {
      global.kind = GlobalKind::kClass;
    } else {
      fail(op_offset_, "GLOBAL '" + global.name +
                           "' is not allowed (a tensor archive names only "
                           "torch._utils._rebuild_tensor_v2 and _rebuild_parameter, "
                           "collections.OrderedDict, torch.<T>Storage, "
                           "torch.jit._pickle's typed lists and type tags, and __torch__ "
                           "classes); nothing is imported or called");
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

  uint32_t expect_list(uint32_t id, const char* what) {
    if (value(id).kind != Kind::kList) {
      fail(op_offset_, std::string(what) + " needs a list below its values, got " + describe(id));
    }
    return id;
  }

  void append(uint32_t list, uint32_t item) {
    contain(1);
    nest(list, item);
    tuples_[values_[list].index].push_back(item);
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
    if (target.kind != Kind::kGlobal || globals_[target.index].kind == GlobalKind::kStorageType ||
        globals_[target.index].kind == GlobalKind::kClass) {
      fail(op_offset_,
           "REDUCE may call only torch._utils._rebuild_tensor_v2 and _rebuild_parameter, "
           "collections.OrderedDict and torch.jit._pickle's list builders and type tags, not " +
               describe(callable));
    }
    switch (globals_[target.index].kind) {
      case GlobalKind::kOrderedDict:
        expect_tuple(args, 0, "OrderedDict's arguments");
        return make_dict();
      case GlobalKind::kTypedList: {
        // The list is the value: its items are checked where they are used.
        const uint32_t list = expect_tuple(args, 1, "a typed list's arguments")[0];
        if (value(list).kind != Kind::kList) {
          fail(op_offset_, "a typed list's argument must be a list, got " + describe(list));
        }
        return list;
      }
      case GlobalKind::kTypeTag: {
        const auto& a = expect_tuple(args, 2, "restore_type_tag's arguments");
        if (value(a[1]).kind != Kind::kString) {
          fail(op_offset_, "a type tag must be a string, got " + describe(a[1]));
        }
        return a[0];  // the type is TorchScript's business, not a value's
      }
      case GlobalKind::kRebuildParameter: {
        const auto& a = expect_tuple(args, kRebuildParameterArgs, "_rebuild_parameter's arguments");
        if (value(a[0]).kind != Kind::kTensor) {
          fail(op_offset_, "a parameter must wrap a tensor, got " + describe(a[0]));
        }
        expect_bool(a[1], "a parameter's requires_grad");
        expect_empty_dict(a[2], "a parameter's backward hooks");
        return a[0];
      }
      default:
        return rebuild_tensor(args);
    }
  }

  void expect_bool(uint32_t id, const char* what) {
    if (value(id).kind != Kind::kBool) {
      fail(op_offset_, std::string(what) + " must be a bool, got " + describe(id));
    }
  }

  void expect_empty_dict(uint32_t id, const char* what) {
    if (value(id).kind != Kind::kDict || !dicts_[value(id).index].empty()) {
      fail(op_offset_, std::string(what) + " must be an empty dict, got " + describe(id));
    }
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
    const bool with_metadata =
        value(args).kind == Kind::kTuple && tuple(args).size() == kRebuildTensorArgsWithMetadata;
    const auto& a =
        expect_tuple(args, with_metadata ? kRebuildTensorArgsWithMetadata : kRebuildTensorArgs,
                     "_rebuild_tensor_v2's arguments");
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
    expect_bool(a[4], "a tensor's requires_grad");
    expect_empty_dict(a[5], "a tensor's backward hooks");
    if (with_metadata && value(a[6]).kind != Kind::kDict) {
      fail(op_offset_, "a tensor's metadata must be a dict, got " + describe(a[6]));
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

  // The values below the root, depth first in order, each with its path: components joined
  // with '.' below a module object (as state_dict() names parameters) and '/' below a dict,
  // list or tuple. Iterative, with every amount bounded: memo references can make the values
  // a graph with cycles, or one that repeats a subtree exponentially often.
  PickleContents flatten(uint32_t root) {
    PickleContents out;
    const Kind root_kind = value(root).kind;
    if (root_kind != Kind::kObject && root_kind != Kind::kDict && root_kind != Kind::kList &&
        root_kind != Kind::kTuple) {
      fail(value(root).offset,
           "the pickle holds " + describe(root) + ", not a module object, a dict or a list");
    }
    out.module = root_kind == Kind::kObject;
    if (out.module) out.root_class = objects_[value(root).index].class_name;
    struct Pending {
      uint32_t id;
      std::string key;
      std::size_t depth;
      bool root;
      bool module_path;  // reached from a root module object through module objects only
    };
    std::vector<Pending> pending;
    pending.push_back({root, {}, 0, true, out.module});
    std::unordered_set<std::string> keys;
    // Values taken (`visited`) and pushed: a container's children are counted before they
    // are listed, as one value may be referenced many times.
    std::size_t visited = 0, pushed = 1, key_bytes = 0, text_bytes = 0, dims = 0;
    while (!pending.empty()) {
      Pending item = std::move(pending.back());
      pending.pop_back();
      if (++visited > kMaxValues) {
        fail(value(item.id).offset, "more than " + std::to_string(kMaxValues) +
                                        " values reached from the root (repeated references)");
      }
      const Value& v = value(item.id);
      if (v.kind == Kind::kObject || v.kind == Kind::kDict || v.kind == Kind::kList ||
          v.kind == Kind::kTuple) {
        if (item.depth >= kMaxDepth) {
          fail(v.offset, "values nested more than " + std::to_string(kMaxDepth) +
                             " levels deep (or a container that holds itself)");
        }
        const std::size_t count = member_count(item.id);
        if (count > kMaxValues - pushed) {
          fail(v.offset, "more than " + std::to_string(kMaxValues) +
                             " values reached from the root (repeated references)");
        }
        pushed += count;
        const std::vector<Member> children = members(item.id);
        const char separator = v.kind == Kind::kObject ? '.' : '/';
        const bool module_path = item.module_path && v.kind == Kind::kObject;
        // Lengths are checked before a key is made: a long name repeated by memo references
        // must not be copied first.
        for (auto it = children.rbegin(); it != children.rend(); ++it) {
          const std::string number = it->name == kNoName ? std::to_string(it->number) : "";
          const std::string_view component =
              it->name == kNoName ? std::string_view(number) : std::string_view(string(it->name));
          const std::size_t length =
              item.root ? component.size() : item.key.size() + 1 + component.size();
          if (length > kMaxKeyBytes) {
            fail(value(it->child).offset,
                 "a key of more than " + std::to_string(kMaxKeyBytes) + " bytes");
          }
          key_bytes += length;
          if (key_bytes > kMaxTotalKeyBytes) {
            fail(value(it->child).offset,
                 "keys of more than " + std::to_string(kMaxTotalKeyBytes) + " bytes in all");
          }
          std::string key;
          key.reserve(length);
          if (!item.root) (key += item.key) += separator;
          key += component;
          pending.push_back({it->child, std::move(key), item.depth + 1, false, module_path});
        }
        continue;
      }
      PickleAttribute attribute;
      attribute.name = std::move(item.key);
      attribute.module_attribute = item.module_path;
      PickleValue& out_value = attribute.value;
      switch (v.kind) {
        case Kind::kNone:
          out_value.kind = PickleValue::Kind::kNone;
          break;
        case Kind::kBool:
          out_value.kind = PickleValue::Kind::kBool;
          out_value.boolean = v.boolean;
          break;
        case Kind::kInt:
          out_value.kind = PickleValue::Kind::kInt;
          out_value.integer = v.integer;
          break;
        case Kind::kDouble:
          out_value.kind = PickleValue::Kind::kDouble;
          out_value.real = v.real;
          break;
        case Kind::kString:
          out_value.kind = PickleValue::Kind::kString;
          text_bytes += string(item.id).size();  // memo references may repeat one string
          if (text_bytes > kMaxPickleBytes) {
            fail(v.offset, "texts of more than " + std::to_string(kMaxPickleBytes) +
                               " bytes in all (repeated references)");
          }
          out_value.text = string(item.id);
          break;
        case Kind::kTensor:
          out_value.kind = PickleValue::Kind::kTensor;
          dims += tensors_[v.index].sizes.size();
          if (dims > kMaxValues) {
            fail(v.offset, "tensors of more than " + std::to_string(kMaxValues) +
                               " dimensions in all (repeated references)");
          }
          out_value.tensor = tensors_[v.index];
          break;
        default:
          fail(v.offset, "the key '" + printable(attribute.name) + "' holds " + describe(item.id) +
                             ", which a weights entry cannot be");
      }
      if (!keys.insert(attribute.name).second) {
        fail(v.offset, "the key '" + printable(attribute.name) + "' appears twice");
      }
      if (out.attributes.size() >= kMaxEntries) {
        fail(v.offset, "more than " + std::to_string(kMaxEntries) + " entries");
      }
      out.attributes.push_back(std::move(attribute));
    }
    return out;
  }

  // A member of a container: named by a string value (`name`), or by a number (an int dict key
  // or a list index) when `name` is kNoName.
  static constexpr uint32_t kNoName = std::numeric_limits<uint32_t>::max();
  struct Member {
    uint32_t name;
    int64_t number;
    uint32_t child;
  };

  std::size_t member_count(uint32_t id) const {
    const Value& v = value(id);
    switch (v.kind) {
      case Kind::kObject:
        return objects_[v.index].built ? dicts_[value(objects_[v.index].state).index].size() : 0;
      case Kind::kDict:
        return dicts_[v.index].size();
      case Kind::kList:
      case Kind::kTuple:
        return tuple(id).size();
      default:
        return 0;
    }
  }

  // The members of a container: an object's attributes (names must be strings), a dict's items
  // (keys strings or ints), a list's or tuple's items by index.
  std::vector<Member> members(uint32_t id) const {
    const Value& v = value(id);
    std::vector<Member> out;
    const auto add_items = [&](const std::vector<std::pair<uint32_t, uint32_t>>& items,
                               bool int_keys) {
      out.reserve(items.size());
      for (const auto& [key, item] : items) {
        if (value(key).kind == Kind::kString) {
          out.push_back({key, 0, item});
        } else if (int_keys && value(key).kind == Kind::kInt) {
          out.push_back({kNoName, value(key).integer, item});  // an optimizer's state
        } else {
          fail(value(key).offset,
               int_keys ? "a dict key must be a string or an int, got " + describe(key)
                        : "an attribute name must be a string, got " + describe(key));
        }
      }
    };
    switch (v.kind) {
      case Kind::kObject: {
        const Object& object = objects_[v.index];
        if (!object.built) fail(v.offset, "a module object has no state (no BUILD)");
        add_items(dicts_[value(object.state).index], false);
        break;
      }
      case Kind::kDict:
        add_items(dicts_[v.index], true);
        break;
      case Kind::kList:
      case Kind::kTuple: {
        const auto& items = tuple(id);
        out.reserve(items.size());
        for (std::size_t i = 0; i < items.size(); ++i) {
          out.push_back({kNoName, static_cast<int64_t>(i), items[i]});
        }
        break;
      }
      default:
        break;
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
  std::size_t contained_ = 0;  // items put into containers
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

// PyTorch 2 records the byte order of the storages; ours and LibTorch 1.13's are little-endian
// and carry no record.
void check_byte_order(const ZipReader& reader, const std::string& directory) {
  constexpr uint64_t kMaxByteOrderBytes = 16;
  const ZipEntry* entry = reader.find(directory + "byteorder");
  if (entry == nullptr) return;
  if (entry->uncompressed_size > kMaxByteOrderBytes) {
    throw FormatError(reader.label() + ": member '" + printable(entry->name) + "' declares " +
                      std::to_string(entry->uncompressed_size) + " bytes, not a byte order");
  }
  const std::vector<uint8_t> bytes = reader.read_all(*entry);
  const std::string order(bytes.begin(), bytes.end());
  if (order != "little") {
    throw FormatError(reader.label() + ": member '" + printable(entry->name) + "' says '" +
                      printable(order) + "': only little-endian storages are read");
  }
}

}  // namespace

std::size_t storage_element_size(StorageType type) { return storage_name(type).size; }

const char* storage_type_name(StorageType type) { return storage_name(type).name; }

PickleContents parse_pickle(const uint8_t* data, std::size_t size, const std::string& context) {
  return Interpreter(data, size, context).run();
}

std::vector<PickleAttribute> parse_tensor_pickle(const uint8_t* data, std::size_t size,
                                                 const std::string& context) {
  return parse_pickle(data, size, context).attributes;
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
  check_byte_order(reader, layout.directory);
  const std::vector<uint8_t> bytes = reader.read_all(*pickle);
  PickleContents contents = parse_pickle(bytes.data(), bytes.size(), context);
  layout.module = contents.module;
  std::vector<PickleAttribute>& attributes = contents.attributes;

  std::unordered_map<std::string, std::size_t> storage_index;
  for (PickleAttribute& attribute : attributes) {
    TorchArchiveLayout::Entry entry;
    entry.key = std::move(attribute.name);
    entry.value = std::move(attribute.value);
    entry.module_attribute = attribute.module_attribute;
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
  // Only torch_savefun encodes (LibTorch's archive class); Python's names are as given.
  layout.keys_encoded = contents.root_class == kArchiveClass &&
                        !(version >= 1 && version <= kLastUnencodedKeysVersion);
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
