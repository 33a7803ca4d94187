#include "snapshot_filename.h"

#include <fmt/format.h>
#include <limits.h>  // NAME_MAX

#include <array>
#include <charconv>
#include <string_view>

#include "check_argument.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

namespace tth {

namespace {

// Ordering preference: the first field of this list that the template has.
constexpr std::array<std::string_view, 4> kFields = {"iteration", "epoch_detail", "epoch",
                                                     "elapsed_time"};
constexpr int kIteration = 0;
constexpr int kEpochDetail = 1;
constexpr int kEpoch = 2;
constexpr int kElapsedTime = 3;

bool is_integer(int field) { return field == kIteration || field == kEpoch; }

// atomic_write names the temp file of "<name>" ".<name>.tmp.<12 random characters>"
// (atomic_file.cpp): the last component of a target must leave room for these bytes.
constexpr std::size_t kTempNameOverhead = 18;

struct Values {
  int64_t iteration = 0;
  int64_t epoch = 0;
  double epoch_detail = 0;
  double elapsed_time = 0;
};

// Samples every accepted template must read back; the last two are also the longest names a
// template renders: iteration and epoch far beyond any training, and real numbers whose
// fixed form (1e18 / 3) or shortest form (the tiny one) is long.
constexpr int64_t kGenerousCount = 1'000'000'000'000'000'000;
constexpr std::array<Values, 2> kLongest = {
    Values{kGenerousCount, kGenerousCount, 1e18 / 3, 1e18 / 3},
    Values{kGenerousCount, kGenerousCount, 1.2345678901234567e-100, 1.2345678901234567e-100}};
constexpr std::array<Values, 2> kOrdinary = {Values{0, 0, 0, 0}, Values{7, 1, 1.75, 0.0123}};

std::string render(const std::string& pattern, const Values& values) {
  return fmt::format(fmt::runtime(pattern), fmt::arg("iteration", values.iteration),
                     fmt::arg("epoch", values.epoch), fmt::arg("epoch_detail", values.epoch_detail),
                     fmt::arg("elapsed_time", values.elapsed_time));
}

double value_of(const Values& values, int field) {
  switch (field) {
    case kIteration:
      return static_cast<double>(values.iteration);
    case kEpoch:
      return static_cast<double>(values.epoch);
    case kEpochDetail:
      return values.epoch_detail;
    case kElapsedTime:
      break;
  }
  return values.elapsed_time;
}

// Sets `field` of `values` from all of `text`; false if `text` is not one number.
bool parse(const std::string& text, int field, Values& values) {
  const char* end = text.data() + text.size();
  std::from_chars_result result{};
  switch (field) {
    case kIteration:
      result = std::from_chars(text.data(), end, values.iteration);
      break;
    case kEpoch:
      result = std::from_chars(text.data(), end, values.epoch);
      break;
    case kEpochDetail:
      result = std::from_chars(text.data(), end, values.epoch_detail);
      break;
    case kElapsedTime:
      result = std::from_chars(text.data(), end, values.elapsed_time);
      break;
  }
  return result.ec == std::errc() && result.ptr == end;
}

// What a field prints with an accepted spec: its characters, and a regex group of them.
struct Output {
  std::string_view alphabet;
  const char* group;
};
constexpr Output kDigits = {"0123456789", "([0-9]+)"};
constexpr Output kShortestReal = {"0123456789.e+-", "([-+.0-9e]+)"};  // 1.5, 2, 1e-05
constexpr Output kFixedReal = {"0123456789.", "([.0-9]+)"};

constexpr const char* kSpecRequirement =
    "must format {iteration} and {epoch} with no spec, 'd' or a zero-padded width such as "
    "'08d', and {epoch_detail} and {elapsed_time} with no spec or a precision such as '.2f', so "
    "that names read back";

// The output of `field` with `spec`, or nothing for a spec whose output may not read back as
// the value printed: spaces for a width, a fill, an alignment, a sign, another base, '#', an
// exponent or general form, a locale.
std::optional<Output> output_of(int field, const std::string& spec) {
  static const std::regex zero_padded_width(R"(0[1-9][0-9]*d)");
  static const std::regex fixed_precision(R"(\.(0|[1-9][0-9]*)f)");
  if (is_integer(field)) {
    if (spec.empty() || spec == "d" || std::regex_match(spec, zero_padded_width)) return kDigits;
  } else if (spec.empty()) {
    return kShortestReal;
  } else if (std::regex_match(spec, fixed_precision)) {
    return kFixedReal;
  }
  return std::nullopt;
}

// Whether `between` holds a character that neither neighbouring field prints, which makes
// the boundary between them unambiguous.
bool separates(const std::string& between, const Output& left, const Output& right) {
  for (const char c : between) {
    if (left.alphabet.find(c) == std::string_view::npos &&
        right.alphabet.find(c) == std::string_view::npos) {
      return true;
    }
  }
  return false;
}

// Rewrites Chainer's attribute paths, which name the same values: {.updater.iteration} ->
// {iteration}. Escaped braces ("{{") are left alone.
std::string normalize(const std::string& pattern) {
  static const std::string kUpdater = ".updater.";
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    out += pattern[i];
    if (pattern[i] != '{') continue;
    if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
      out += pattern[++i];
    } else if (pattern.compare(i + 1, kUpdater.size(), kUpdater) == 0) {
      i += kUpdater.size();
    } else if (i + 1 < pattern.size() && pattern[i + 1] == '.') {
      ++i;
    }
  }
  return out;
}

// A piece of a template: one literal character, or a field with its spec.
struct Part {
  std::size_t begin = 0;  // position in the template
  bool is_field = false;
  char literal = 0;  // the character, "{{" and "}}" unescaped
  int field = -1;    // index in kFields; -1 for a name that is none of them ("{}", "{0}")
  std::string spec;
};

// Splits a template that fmt accepted (so braces are balanced).
std::vector<Part> split(const std::string& pattern) {
  std::vector<Part> parts;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    Part part;
    part.begin = i;
    const char c = pattern[i];
    if ((c == '{' || c == '}') && i + 1 < pattern.size() && pattern[i + 1] == c) {
      part.literal = c;
      ++i;
    } else if (c == '{') {
      std::size_t close = i + 1;
      for (int depth = 1; close < pattern.size(); ++close) {  // a spec may hold "{}"
        depth += pattern[close] == '{' ? 1 : pattern[close] == '}' ? -1 : 0;
        if (depth == 0) break;
      }
      const std::string field = pattern.substr(i + 1, close - i - 1);
      const std::size_t colon = field.find(':');
      const std::string name = field.substr(0, colon);
      part.is_field = true;
      part.spec = colon == std::string::npos ? "" : field.substr(colon + 1);
      for (std::size_t f = 0; f < kFields.size(); ++f) {
        if (kFields[f] == name) part.field = static_cast<int>(f);
      }
      i = close;
    } else {
      part.literal = c;
    }
    parts.push_back(std::move(part));
  }
  return parts;
}

std::string escape(char c) {
  static const std::string special = R"(\^$.|?*+()[]{})";
  return special.find(c) != std::string::npos ? std::string("\\") + c : std::string(1, c);
}

}  // namespace

SnapshotFilename::SnapshotFilename(const std::string& pattern)
    : pattern_(normalize(pattern)), name_start_(0) {
  check_argument(!pattern.empty(), "SnapshotOptions", "filename", "must not be empty");
  const std::string quoted = fmt::format("'{}'", pattern);
  const auto require = [&](bool ok, std::string_view requirement) {
    check_argument(ok, "SnapshotOptions", "filename", requirement, quoted);
  };
  std::string sample;
  try {
    sample = render(pattern_, {1, 1, 1.5, 1.5});
  } catch (const fmt::format_error& error) {
    // A known field with a spec that fmt refuses gets the requirement on specs, as one that
    // fmt takes but that would not read back does (fmt 10 refuses '00d', which fmt 9 took).
    for (const Part& part : split(pattern_)) {
      require(!part.is_field || part.field < 0 || output_of(part.field, part.spec).has_value(),
              kSpecRequirement);
    }
    throw argument_error("SnapshotOptions", "filename",
                         fmt::format("must be a template with the fields {{iteration}}, "
                                     "{{epoch}}, {{epoch_detail}}, {{elapsed_time}} ({})",
                                     error.what()),
                         quoted);
  }
  require(!sample.empty() && sample.back() != '/', "must name a file");

  const std::vector<Part> parts = split(pattern_);
  std::size_t first_name_part = 0;  // the last component starts after the last '/'
  for (std::size_t k = 0; k < parts.size(); ++k) {
    if (!parts[k].is_field && parts[k].literal == '/') first_name_part = k + 1;
  }
  name_start_ = parts[first_name_part].begin;  // a name part exists: the sample has no '/' last
  std::string regex;
  std::optional<Output> previous;
  std::string between;  // literal text since the previous field of the last component
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const Part& part = parts[k];
    const bool in_name = k >= first_name_part;
    if (!part.is_field) {
      if (in_name) regex += escape(part.literal);
      between += part.literal;
      continue;
    }
    require(part.field >= 0,
            "must name its fields: {iteration}, {epoch}, {epoch_detail}, {elapsed_time}");
    const std::optional<Output> output = output_of(part.field, part.spec);
    require(output.has_value(), kSpecRequirement);
    if (!in_name) {
      static_directory_ = false;
      continue;
    }
    require(!previous || separates(between, *previous, *output),
            "must separate two fields by a character that neither prints, such as '_'");
    regex += output->group;
    group_fields_.push_back(part.field);
    previous = output;
    between.clear();
  }
  for (int field = 0; field < static_cast<int>(kFields.size()) && order_field_ < 0; ++field) {
    for (const int group_field : group_fields_) {
      if (group_field == field) order_field_ = field;
    }
  }
  name_regex_ = std::regex(regex);

  for (const Values& values : kLongest) {
    const std::string name = render(pattern_, values);
    bool fits = true;
    std::size_t start = 0;
    for (std::size_t slash; (slash = name.find('/', start)) != std::string::npos;) {
      fits = fits && slash - start <= NAME_MAX;
      start = slash + 1;
    }
    fits = fits && name.size() - start + kTempNameOverhead <= NAME_MAX;
    require(fits, fmt::format("must render components of at most NAME_MAX ({}) bytes, the last "
                              "at most {} (its temp file's name is {} bytes longer), also at "
                              "iteration 10^18",
                              NAME_MAX, NAME_MAX - kTempNameOverhead, kTempNameOverhead));
  }
  // Guaranteed by the checks above except for a field repeated with different specs, whose
  // occurrences may disagree ({epoch_detail:.1f}_{epoch_detail}).
  const std::string name_pattern = pattern_.substr(name_start_);
  for (const auto* samples : {&kOrdinary, &kLongest}) {
    for (const Values& values : *samples) {
      require(progress_of(render(name_pattern, values)).has_value(),
              "must render names that read back as the values they were made from (give a "
              "repeated field the same spec)");
    }
  }
}

std::string SnapshotFilename::format(const TorchTrainerHook& hook) const {
  return render(pattern_,
                {hook.iteration(), hook.epoch(), hook.epoch_detail(), hook.elapsed_time()});
}

std::optional<double> SnapshotFilename::progress_of(const std::string& file_name) const {
  std::smatch match;
  if (!std::regex_match(file_name, match, name_regex_)) return std::nullopt;
  Values values;
  std::array<bool, kFields.size()> read{};
  for (std::size_t group = 0; group < group_fields_.size(); ++group) {
    const auto field = static_cast<std::size_t>(group_fields_[group]);
    if (read[field]) continue;  // a repeated field: the rendering below checks it
    read[field] = true;
    if (!parse(match[static_cast<int>(group) + 1].str(), group_fields_[group], values)) {
      return std::nullopt;
    }
  }
  // Exactly the name these values render: no other spelling of a number ("1e3", "007") and
  // no other padding counts as this template's file.
  if (render(pattern_.substr(name_start_), values) != file_name) return std::nullopt;
  return order_field_ < 0 ? 0.0 : value_of(values, order_field_);
}

std::string SnapshotFilename::directory() const {
  return name_start_ == 0 ? std::string() : pattern_.substr(0, name_start_ - 1);
}

}  // namespace tth
