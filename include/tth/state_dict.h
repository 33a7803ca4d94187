// StateDict: the one representation of saved state.
//
// Everything that survives a resume (the manager's counters, triggers, extensions, models,
// optimizers) is turned into a `StateDict` and back. Savefuns (LibTorch archive, npz) consume
// only this type, so a new piece of state never needs a new file format.
//
// A StateDict is an insertion-ordered map from keys to values. A value is a tensor or a text.
// Scalars are 0-d tensors (integers kLong, reals kDouble, flags kBool); structured data (JSON)
// is text. Keys are '/'-joined paths, as in Chainer's DictionarySerializer. The whole training
// state is laid out as tth/state_layout.h (and doc/state_layout.md) describe.
//
// Thread safety: none; a StateDict is a value type, copy it to share it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace tth {

/// A saved value: a tensor (scalars are 0-d tensors) or a UTF-8 text (e.g. JSON).
using StateValue = std::variant<at::Tensor, std::string>;

/// Insertion-ordered map from '/'-joined keys to tensors and texts.
class StateDict {
 public:
  using Entry = std::pair<std::string, StateValue>;

  /// Sets `key` to `value`, replacing an existing value in place (its position is kept).
  void set(const std::string& key, StateValue value);
  /// Scalar setters: a 0-d kLong, kDouble or kBool tensor.
  void set_int(const std::string& key, int64_t value);
  void set_double(const std::string& key, double value);
  void set_bool(const std::string& key, bool value);

  /// True when `key` is present.
  bool contains(const std::string& key) const;
  /// The value of `key`. Throws StateError naming the key when it is absent.
  const StateValue& at(const std::string& key) const;
  /// The tensor of `key`. Throws StateError when absent or when the value is a text.
  const at::Tensor& tensor(const std::string& key) const;
  /// The text of `key`. Throws StateError when absent or when the value is a tensor.
  const std::string& text(const std::string& key) const;
  /// Scalar getters; throw StateError naming the key unless it holds a one-element tensor.
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;

  /// Removes `key` if present; returns whether it was.
  bool erase(const std::string& key);
  /// Moves the value of `key` out (StateError when absent); the key stays, holding an
  /// undefined tensor. Lets a loader free each value as soon as it has used it.
  StateValue take(const std::string& key);
  /// Moves every entry out, in insertion order; the dict is empty afterwards.
  std::vector<Entry> release();

  /// The entries whose key starts with `prefix + "/"`, with that prefix removed.
  StateDict sub(const std::string& prefix) const;
  /// Adds every entry of `other` under `prefix + "/"`.
  void merge(const std::string& prefix, const StateDict& other);

  /// Entries in insertion order.
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  std::vector<Entry>::const_iterator begin() const noexcept { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const noexcept { return entries_.end(); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// The keys a non-strict load left out, as PyTorch's `load_state_dict(strict=False)` returns
/// them: keys of the target that the state lacked (their current values were kept) and keys
/// of the state that the target has no place for (ignored).
struct IncompatibleKeys {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  bool empty() const noexcept { return missing_keys.empty() && unexpected_keys.empty(); }
};

/// Human-readable description of a value for error messages: "Float[2, 3]" or "text".
std::string describe(const StateValue& value);

/// Checks that `given` can be loaded where `expected` was produced: for each common key the
/// same kind (tensor or text), dtype and shape; when `strict`, the same keys. Throws
/// StateError naming `what`, the key and both values. Returns (when not strict) the keys of
/// `expected` that `given` lacks and those of `given` that `expected` lacks.
IncompatibleKeys check_compatible(const StateDict& expected, const StateDict& given, bool strict,
                                  const std::string& what);

}  // namespace tth
