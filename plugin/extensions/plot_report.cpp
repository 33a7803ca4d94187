#include "tth/extensions/plot_report.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "check_argument.h"
#include "posix_file.h"
#include "triggers/check_trigger.h"
#include "tth/atomic_file.h"
#include "tth/diagnostics.h"
#include "tth/error.h"
#include "tth/torch_trainer_hook.h"

// Last: plplot.h defines short macros (plline, plbox, ...) for its c_ functions.
#include <plplot.h>

namespace tth {

namespace fs = std::filesystem;

namespace {

// ---- Look: sizes in units of PLplot's character height unless said otherwise ----

constexpr int kMinSize = 64;
constexpr int kMaxSize = 8192;
// PLplot scales its default character height with the page (by its mean side over 200 mm;
// the cairo devices take 72 pixels or points per inch). Text is this scale at 640 x 480 and
// shrinks only with the square root of the size, so a small picture stays readable.
constexpr double kTextScale = 0.95;
constexpr double kTextScaleMeanSide = 560;
constexpr double kTitleScale = 1.2;
constexpr double kLegendTextScale = 0.9;
constexpr double kLegendSpacing = 2.0;  // between entries
constexpr double kLegendSample = 2.5;   // length of the line sample
constexpr double kMarkerScale = 0.55;
constexpr double kLineWidth = 1.5;
constexpr double kGridWidth = 0.8;
// The first guess at the legend's width (PLplot measures it while drawing; see draw_plot):
// the average advance of a character of the sans font and the padding around the text, in
// legend character heights.
constexpr double kCharWidth = 0.8;
constexpr double kLegendPadding = 2.7;
// Longest text given to PLplot, whose text paths have fixed buffers (1024 code points in
// plP_text, 500 in one path of the cairo driver, which then prints a message and draws none).
constexpr std::size_t kMaxTextCodePoints = 200;
constexpr char kMarker[] = "\xe2\x97\x8f";  // U+25CF BLACK CIRCLE

// cmap0 of every plot: the background, the axes, the grid, then the series' colors
// (matplotlib's "tab10", so the lines look like those of Chainer's PlotReport).
constexpr int kBackground = 0;
constexpr int kForeground = 1;
constexpr int kGridColor = 2;
constexpr int kFirstSeriesColor = 3;
constexpr int kPalette[][3] = {
    {255, 255, 255}, {0, 0, 0},      {210, 210, 210}, {31, 119, 180}, {255, 127, 14},
    {44, 160, 44},   {214, 39, 40},  {148, 103, 189}, {140, 86, 75},  {227, 119, 194},
    {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};
constexpr int kPaletteSize = sizeof kPalette / sizeof kPalette[0];
constexpr int kSeriesColors = kPaletteSize - kFirstSeriesColor;

struct Device {
  PlotFormat format;
  const char* extension;
  const char* name;  // PLplot's
  // How every complete file of the format ends (trailing whitespace aside); a file that does
  // not was cut short, e.g. by a write error that the device did not report.
  const char* trailer;
};

// The PNG trailer is the IEND chunk: its type and CRC.
constexpr char kPngTrailer[] = "IEND\xae\x42\x60\x82";
constexpr Device kDevices[] = {
    {PlotFormat::kPng, ".png", "pngcairo", kPngTrailer},
    {PlotFormat::kSvg, ".svg", "svgcairo", "</svg>"},
    {PlotFormat::kPdf, ".pdf", "pdfcairo", "%%EOF"},
};

const Device& device_of(PlotFormat format) {
  for (const Device& device : kDevices) {
    if (device.format == format) return device;
  }
  throw Error("plot_lines: unknown format");  // unreachable: every format has a device
}

// ---- Text ----

// `text` as PLplot draws it literally: '#' (PLplot's escape character) doubled, control
// characters as spaces, cut at kMaxTextCodePoints code points.
std::string plplot_text(const std::string& text) {
  std::string out;
  std::size_t code_points = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const bool starts_code_point = (c & 0xC0) != 0x80;
    if (starts_code_point && ++code_points > kMaxTextCodePoints) break;
    if (c == '#') {
      out += "##";
    } else if (c < 0x20 || c == 0x7F) {
      out += ' ';
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::size_t code_points(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

// ---- The frame: everything PLplot is told, prepared before the first PLplot call ----

// A run of consecutive finite points of one series.
struct Run {
  const double* x;
  const double* y;
  PLINT n;
  PLINT color;
};

struct Range {
  double min;
  double max;
};

// The ticks of an axis and how their numbers are written. We choose them rather than PLplot,
// whose scaled numbers put a separate "(x10^-5)" above the axis, where it meets the title.
struct Ticks {
  double step = 0;  // between major ticks; 0: PLplot's choice and numbers
  PLINT minor = 0;  // intervals between major ticks
  bool scientific = false;
  int decimals = 0;  // after the point (of the mantissa when scientific)
};

// What render() draws. Plain data and pointers into the caller's containers, so that the
// drawing code owns nothing that a jump out of PLplot (see on_plplot_exit) would leak.
struct Frame {
  const char* device = nullptr;
  std::FILE* out = nullptr;
  PLINT width = 0;
  PLINT height = 0;
  Range x{0, 1};
  Range y{0, 1};
  Ticks ticks[2];                 // of the x and the y axis
  std::size_t y_label_chars = 0;  // the longest number on the y axis
  const char* title = "";
  const char* x_label = "";
  const char* y_label = "";
  bool grid = true;
  bool marker = true;
  double text_scale = 1;
  const Run* runs = nullptr;
  int n_runs = 0;
  // The legend, one entry per drawn series.
  PLINT n_legend = 0;
  const char* const* legend_text = nullptr;
  const PLINT* legend_options = nullptr;
  const PLINT* legend_colors = nullptr;
  const PLINT* legend_text_colors = nullptr;
  const PLINT* legend_styles = nullptr;
  const PLFLT* legend_widths = nullptr;
  const PLFLT* legend_symbol_scales = nullptr;
  const PLINT* legend_symbol_numbers = nullptr;
  const char* const* legend_symbols = nullptr;
  // The legend's size in mm, to keep room for it right of the plot and align its top with
  // the plot's; 0: a guess from the longest label and the number of entries.
  double legend_width_mm = 0;
  double legend_height_mm = 0;
  std::size_t longest_label = 0;  // in code points
};

// What render() did.
struct Rendered {
  enum Outcome { kDrawn, kNoDevice, kNoStream, kFailed } outcome = kFailed;
  double legend_room_mm[2] = {0, 0};  // width and height the layout assumed
  double legend_mm[2] = {0, 0};       // width and height as PLplot measured them
};

// ---- PLplot, guarded ----

// PLplot keeps global state and is not thread-safe: every use in this library holds this.
std::mutex plplot_mutex;

// Where on_plplot_exit jumps to while render() runs; null otherwise. Guarded by plplot_mutex.
std::jmp_buf* plplot_exit_target = nullptr;
char plplot_exit_message[1024];
// plsError's buffers of the drawing stream: PLplot writes a failed operation's message here
// instead of printing it. Its messages are short; plabort formats them with sprintf.
PLINT plplot_error_code = 0;
char plplot_error_message[4096];

// PLplot's exit handler. plexit() calls it on a fatal error and then ends the process; we
// jump back into render() instead, which turns the error into an exception. The frames
// between hold only trivially destructible objects (see Frame), so the jump skips no
// destructor.
int on_plplot_exit(const char* message) {
  std::snprintf(plplot_exit_message, sizeof plplot_exit_message, "%s",
                message != nullptr ? message : "");
  if (plplot_exit_target != nullptr) std::longjmp(*plplot_exit_target, 1);
  return 1;
}

bool has_device(const char* name) {
  constexpr int kMaxDevices = 256;
  const char* menus[kMaxDevices];
  const char* names[kMaxDevices];
  const char** menu_list = menus;
  const char** name_list = names;
  int count = kMaxDevices;
  plgDevs(&menu_list, &name_list, &count);
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(names[i], name) == 0) return true;
  }
  return false;
}

// A tick's number into `out` (snprintf only: PLplot calls this from C).
void format_tick(const Ticks& ticks, double value, char* out, std::size_t size) {
  if (std::fabs(value) < ticks.step * 1e-6) {  // not -0.0, 1e-17 or 0.0e+00
    if (ticks.scientific) {
      std::snprintf(out, size, "0");
    } else {
      std::snprintf(out, size, "%.*f", ticks.decimals, 0.0);
    }
    return;
  }
  std::snprintf(out, size, ticks.scientific ? "%.*e" : "%.*f", ticks.decimals, value);
}

void write_tick(PLINT axis, PLFLT value, char* label, PLINT length, PLPointer data) {
  const Ticks* ticks = static_cast<const Ticks*>(data);
  format_tick(ticks[axis == PL_Y_AXIS ? 1 : 0], value, label, static_cast<std::size_t>(length));
}

void draw(const Frame& frame, Rendered& rendered) {
  pladv(0);
  plschr(0, frame.text_scale);
  PLFLT default_height = 0;
  PLFLT height = 0;  // of a character, in mm
  plgchr(&default_height, &height);
  PLFLT page_left = 0, page_right = 0, page_bottom = 0, page_top = 0;
  plgspa(&page_left, &page_right, &page_bottom, &page_top);
  const PLFLT page_width = page_right - page_left;
  const PLFLT page_height = page_top - page_bottom;

  // Margins in mm: tick labels, axis labels, title, and the legend on the right.
  const PLFLT numbers = height * (kCharWidth * static_cast<double>(frame.y_label_chars) + 1.5);
  const PLFLT left = numbers + height * (frame.y_label[0] != '\0' ? 2.5 : 0.5);
  const PLFLT bottom = height * ((frame.x_label[0] != '\0' ? 2.2 : 0.0) + 3.0);
  const PLFLT top = height * (frame.title[0] != '\0' ? 1.5 + 1.5 * kTitleScale : 1.2);
  const PLFLT gap = height * 0.8;
  const PLFLT sample = height * kLegendSample;
  const PLFLT legend_width =
      frame.legend_width_mm > 0
          ? frame.legend_width_mm
          : sample + height * kLegendTextScale *
                         (kLegendPadding + kCharWidth * static_cast<double>(frame.longest_label));
  const PLFLT legend_height = frame.legend_height_mm > 0 ? frame.legend_height_mm
                                                         : height * kLegendSpacing * frame.n_legend;
  rendered.legend_room_mm[0] = legend_width;
  rendered.legend_room_mm[1] = legend_height;
  const PLFLT right = (frame.n_legend > 0 ? gap + legend_width : 0.0) + height * 1.2;
  const PLFLT plot_width = std::max(page_width - left - right, page_width * 0.2);
  const PLFLT plot_height = std::max(page_height - bottom - top, page_height * 0.2);
  plsvpa(left, left + plot_width, bottom, bottom + plot_height);
  plwind(frame.x.min, frame.x.max, frame.y.min, frame.y.max);

  if (frame.grid) {
    // Solid and light: PLplot draws dashed lines dash by dash, hundreds of paths in an SVG.
    plcol0(kGridColor);
    plwidth(kGridWidth);
    plbox("g", frame.ticks[0].step, 0, "g", frame.ticks[1].step, 0);
  }

  plwidth(kLineWidth);
  for (int i = 0; i < frame.n_runs; ++i) {
    const Run& run = frame.runs[i];
    plcol0(run.color);
    if (run.n > 1) plline(run.n, run.x, run.y);
  }
  plschr(0, frame.text_scale * kMarkerScale);
  for (int i = 0; i < frame.n_runs; ++i) {
    const Run& run = frame.runs[i];
    if (!frame.marker && run.n > 1) continue;  // a lone point is invisible without one
    plcol0(run.color);
    plstring(run.n, run.x, run.y, kMarker);
  }
  plschr(0, frame.text_scale);

  plcol0(kForeground);
  plwidth(1);
  // A frame, with ticks (outward, i) and numbers (horizontal on the y axis, v) on the bottom
  // and left only: ticks on the top would run into the title.
  plbox("bc", 0, 0, "bc", 0, 0);
  plslabelfunc(write_tick, const_cast<Ticks*>(frame.ticks));
  const Ticks& x = frame.ticks[0];
  const Ticks& y = frame.ticks[1];
  plbox(x.step > 0 ? "binsto" : "binst", x.step, x.minor, y.step > 0 ? "binstov" : "binstv", y.step,
        y.minor);
  if (frame.title[0] != '\0') {
    plschr(0, frame.text_scale * kTitleScale);
    plmtex("t", 1.0, 0.5, 0.5, frame.title);
    plschr(0, frame.text_scale);
  }
  if (frame.x_label[0] != '\0') plmtex("b", 3.0, 0.5, 0.5, frame.x_label);
  if (frame.y_label[0] != '\0') plmtex("l", numbers / height + 1.0, 0.5, 0.5, frame.y_label);

  if (frame.n_legend > 0) {
    // Outside at the top right, PLplot puts the legend's bottom at the plot's top: move it
    // down by its height, so that the tops align.
    PLFLT width = 0, height = 0;  // in units of the plot's width and height
    pllegend(&width, &height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
             PL_POSITION_RIGHT | PL_POSITION_TOP | PL_POSITION_OUTSIDE | PL_POSITION_VIEWPORT,
             gap / plot_width, -legend_height / plot_height, sample / plot_width, kBackground,
             kForeground, 1, 0, 0, frame.n_legend, frame.legend_options, 1.0,
             frame.text_scale * kLegendTextScale, kLegendSpacing, 0.0, frame.legend_text_colors,
             frame.legend_text, nullptr, nullptr, nullptr, nullptr, frame.legend_colors,
             frame.legend_styles, frame.legend_widths, frame.legend_colors,
             frame.legend_symbol_scales, frame.legend_symbol_numbers, frame.legend_symbols);
    rendered.legend_mm[0] = width * plot_width;
    rendered.legend_mm[1] = height * plot_height;
  }
}

// Draws `frame` with a PLplot stream of its own. On kFailed, plplot_exit_message or
// plplot_error_message says why. The caller's current stream is restored and PLplot's exit
// handler reset to the default. Variables read after a jump back are volatile.
void render(const Frame& frame, Rendered& rendered) {
  std::jmp_buf target;
  PLINT previous = 0;
  plgstrm(&previous);
  volatile PLINT stream = -1;
  volatile Rendered::Outcome outcome = Rendered::kFailed;
  plplot_exit_message[0] = '\0';
  plplot_error_code = 0;
  plplot_error_message[0] = '\0';
  plplot_exit_target = &target;
  plsexit(on_plplot_exit);
  if (setjmp(target) == 0) {
    PLINT made = -1;
    plmkstrm(&made);
    stream = made;
    if (made < 0) {
      outcome = Rendered::kNoStream;
    } else {
      plsError(&plplot_error_code, plplot_error_message);
      if (has_device(frame.device)) {
        plsdev(frame.device);
        // "-" keeps PLplot from closing the FILE (plCloseFile), which stays the caller's.
        plsfnam("-");
        plsfile(frame.out);
        plspage(0, 0, frame.width, frame.height, 0, 0);
        plscmap0n(kPaletteSize);
        for (int i = 0; i < kPaletteSize; ++i) {
          plscol0(i, kPalette[i][0], kPalette[i][1], kPalette[i][2]);
        }
        plinit();
        draw(frame, rendered);
        outcome = Rendered::kDrawn;
      } else {
        outcome = Rendered::kNoDevice;
      }
      plend1();
      stream = -1;
    }
  } else {
    outcome = Rendered::kFailed;
    // PLplot gave up inside: free the stream if it can still be closed, once.
    if (stream >= 0) {
      if (setjmp(target) == 0) plend1();
    }
  }
  plsexit(nullptr);
  plplot_exit_target = nullptr;
  plsstrm(previous);
  rendered.outcome = plplot_error_code != 0 ? Rendered::kFailed : outcome;
}

// A FILE that collects what PLplot writes in memory; we write the file ourselves, through
// posix_file.h, so that every write error is seen and reported.
class MemoryFile {
 public:
  MemoryFile() : file_(::open_memstream(&data_, &size_)) {
    if (file_ == nullptr) throw IOError("open_memstream", "<memory>", errno);
  }
  ~MemoryFile() {
    if (file_ != nullptr) std::fclose(file_);
    std::free(data_);
  }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  std::FILE* get() const noexcept { return file_; }
  /// Closes the stream; the bytes are then complete.
  std::string_view finish() {
    const int closed = std::fclose(file_);
    file_ = nullptr;
    if (closed != 0) throw IOError("close memory stream", "<memory>", errno);
    return {data_, size_};
  }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::FILE* file_;
};

bool ends_with_trailer(std::string_view bytes, std::string_view trailer) {
  while (!bytes.empty() && std::isspace(static_cast<unsigned char>(bytes.back()))) {
    bytes.remove_suffix(1);
  }
  return bytes.size() >= trailer.size() &&
         bytes.compare(bytes.size() - trailer.size(), trailer.size(), trailer) == 0;
}

// About kTicks major ticks of 1, 2 or 5 times a power of ten; steps of whole numbers when
// `integral` (epochs, iterations).
constexpr double kTicks = 6;

Ticks choose_ticks(Range range, bool integral) {
  Ticks ticks;
  const double raw = (range.max - range.min) / kTicks;
  if (!(raw > 0) || !std::isfinite(raw)) return ticks;  // PLplot decides
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  const double mantissa = raw / power;
  const double nice = mantissa < 1.5 ? 1 : mantissa < 3 ? 2 : mantissa < 7 ? 5 : 10;
  ticks.step = nice * power;
  ticks.minor = nice == 2 ? 4 : 5;
  if (integral && ticks.step <= 1) {
    ticks.step = 1;
    ticks.minor = 1;
  }
  const double largest = std::max(std::fabs(range.min), std::fabs(range.max));
  const int step_exponent = static_cast<int>(std::floor(std::log10(ticks.step) + 1e-9));
  ticks.scientific = largest >= 1e5 || largest < 1e-3;
  if (ticks.scientific) {
    const int largest_exponent = static_cast<int>(std::floor(std::log10(largest)));
    ticks.decimals = std::clamp(largest_exponent - step_exponent, 0, 6);
  } else {
    ticks.decimals = std::clamp(-step_exponent, 0, 6);
  }
  return ticks;
}

// The longest number of the y axis's ticks, in characters.
std::size_t longest_tick(const Ticks& ticks, Range range) {
  if (ticks.step == 0) return 8;  // PLplot's numbers: room for a few digits
  std::size_t longest = 1;
  char text[64];
  double k = std::ceil(range.min / ticks.step);
  for (int i = 0; i < 100 && k * ticks.step <= range.max; ++i, k += 1) {
    format_tick(ticks, k * ticks.step, text, sizeof text);
    longest = std::max(longest, std::strlen(text));
  }
  return longest;
}

Range padded(double min, double max) {
  if (!(min <= max)) return {0, 1};  // no finite value
  double pad = 0.05 * (max - min);
  if (!std::isfinite(pad)) pad = 0;
  if (pad <= std::max(std::fabs(min), std::fabs(max)) * 1e-9) {
    // One value (or nearly): a range around it of its own magnitude.
    pad = min == 0 && max == 0 ? 1.0 : std::max(std::fabs(min), std::fabs(max)) * 0.1;
  }
  return {min - pad, max + pad};
}

void draw_plot(const char* who, const std::string& path, const std::vector<PlotSeries>& series,
               const PlotStyle& style) {
  const std::optional<PlotFormat> format = plot_format_of(path);
  check_argument(format.has_value(), who, "path", "must end in .png, .svg or .pdf",
                 fmt::format("'{}'", path));
  check_argument(style.width() >= kMinSize && style.width() <= kMaxSize, who, "width",
                 fmt::format("must be in [{}, {}]", kMinSize, kMaxSize), style.width());
  check_argument(style.height() >= kMinSize && style.height() <= kMaxSize, who, "height",
                 fmt::format("must be in [{}, {}]", kMinSize, kMaxSize), style.height());
  const Device& device = device_of(*format);

  // Finite points of each series as runs, and the legend of the series that have any.
  std::vector<std::vector<double>> xs(series.size()), ys(series.size());
  std::vector<std::pair<std::size_t, std::size_t>> run_bounds;  // begin, end in xs[s]
  std::vector<std::size_t> run_series;
  std::vector<std::string> labels;
  std::vector<PLINT> colors;
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min;
  double y_min = x_min, y_max = -x_min;
  bool all_integral = true;
  for (std::size_t s = 0; s < series.size(); ++s) {
    bool in_run = false;
    for (const auto& [x, y] : series[s].points) {
      if (!std::isfinite(x) || !std::isfinite(y)) {
        in_run = false;
        continue;
      }
      if (!in_run) {
        run_bounds.emplace_back(xs[s].size(), xs[s].size());
        run_series.push_back(s);
        in_run = true;
      }
      xs[s].push_back(x);
      ys[s].push_back(y);
      ++run_bounds.back().second;
      all_integral = all_integral && x == std::round(x);
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
    if (!xs[s].empty()) {
      labels.push_back(plplot_text(series[s].label));
      colors.push_back(kFirstSeriesColor + static_cast<PLINT>(colors.size()) % kSeriesColors);
    }
  }
  std::vector<PLINT> color_of(series.size(), 0);
  for (std::size_t s = 0, drawn = 0; s < series.size(); ++s) {
    if (!xs[s].empty()) color_of[s] = colors[drawn++];
  }
  std::vector<Run> runs;
  for (std::size_t r = 0; r < run_bounds.size(); ++r) {
    const std::size_t s = run_series[r];
    const auto [begin, end] = run_bounds[r];
    runs.push_back(
        {xs[s].data() + begin, ys[s].data() + begin, static_cast<PLINT>(end - begin), color_of[s]});
  }
  const std::size_t n_legend = labels.size();
  std::vector<const char*> legend_text;
  std::size_t longest_label = 0;
  for (const std::string& label : labels) {
    legend_text.push_back(label.c_str());
    longest_label = std::max(longest_label, code_points(label));
  }
  const std::vector<PLINT> options(n_legend,
                                   PL_LEGEND_LINE | (style.marker() ? PL_LEGEND_SYMBOL : 0));
  const std::vector<PLINT> text_colors(n_legend, kForeground);
  const std::vector<PLINT> line_styles(n_legend, 1);
  const std::vector<PLFLT> line_widths(n_legend, kLineWidth);
  const double text_scale =
      kTextScale * std::sqrt(kTextScaleMeanSide / (0.5 * (style.width() + style.height())));
  const std::vector<PLFLT> symbol_scales(n_legend, kMarkerScale * text_scale);
  const std::vector<PLINT> symbol_numbers(n_legend, 1);
  const std::vector<const char*> symbols(n_legend, kMarker);
  const std::string title = plplot_text(style.title());
  const std::string x_label = plplot_text(style.x_label());
  const std::string y_label = plplot_text(style.y_label());

  Frame frame;
  frame.device = device.name;
  frame.width = style.width();
  frame.height = style.height();
  frame.x = padded(x_min, x_max);
  frame.y = padded(y_min, y_max);
  frame.ticks[0] = choose_ticks(frame.x, all_integral);
  frame.ticks[1] = choose_ticks(frame.y, false);
  frame.y_label_chars = longest_tick(frame.ticks[1], frame.y);
  frame.title = title.c_str();
  frame.x_label = x_label.c_str();
  frame.y_label = y_label.c_str();
  frame.grid = style.grid();
  frame.marker = style.marker();
  frame.text_scale = text_scale;
  frame.runs = runs.data();
  frame.n_runs = static_cast<int>(runs.size());
  frame.n_legend = static_cast<PLINT>(n_legend);
  frame.legend_text = legend_text.data();
  frame.legend_options = options.data();
  frame.legend_colors = colors.data();
  frame.legend_text_colors = text_colors.data();
  frame.legend_styles = line_styles.data();
  frame.legend_widths = line_widths.data();
  frame.legend_symbol_scales = symbol_scales.data();
  frame.legend_symbol_numbers = symbol_numbers.data();
  frame.legend_symbols = symbols.data();
  frame.longest_label = longest_label;

  std::unique_lock<std::mutex> lock(plplot_mutex);
  // The legend's size is known only once PLplot draws it: draw with a guess, and again with
  // the measured size when the guess was off.
  std::string bytes;
  for (int attempt = 0;; ++attempt) {
    MemoryFile memory;
    frame.out = memory.get();
    Rendered rendered;
    render(frame, rendered);
    switch (rendered.outcome) {
      case Rendered::kDrawn:
        break;
      case Rendered::kNoDevice:
        throw Error(fmt::format("{}: PLplot has no '{}' device; install plplot-driver-cairo", who,
                                device.name));
      case Rendered::kNoStream:
        throw Error(fmt::format("{}: PLplot has no free stream to draw '{}'", who, path));
      case Rendered::kFailed:
        throw Error(fmt::format(
            "{}: PLplot failed to draw '{}': {}", who, path,
            plplot_exit_message[0] != '\0' ? plplot_exit_message : plplot_error_message));
    }
    const std::string_view written = memory.finish();
    if (attempt == 0 && (std::fabs(rendered.legend_mm[0] - rendered.legend_room_mm[0]) > 0.5 ||
                         std::fabs(rendered.legend_mm[1] - rendered.legend_room_mm[1]) > 0.5)) {
      frame.legend_width_mm = rendered.legend_mm[0];
      frame.legend_height_mm = rendered.legend_mm[1];
      continue;
    }
    if (!ends_with_trailer(written, device.trailer)) {
      throw Error(
          fmt::format("{}: PLplot's '{}' device wrote an incomplete file ({} bytes) for "
                      "'{}'",
                      who, device.name, written.size(), path));
    }
    bytes.assign(written);
    break;
  }
  lock.unlock();

  atomic_write(path, [&](const std::string& temp) {
    File file(temp, O_WRONLY | O_TRUNC);
    file.write_all(bytes.data(), bytes.size());
    file.close();
  });
}

// ---- PlotReport's state ----

constexpr char kWho[] = "PlotReport";
constexpr char kPointsKey[] = "points";
constexpr char kTriggerPrefix[] = "trigger";

nlohmann::json y_to_json(double y) {
  if (std::isnan(y)) return "NaN";
  if (std::isinf(y)) return y > 0 ? "Infinity" : "-Infinity";
  return y;
}

double y_from_json(const nlohmann::json& value) {
  if (value.is_number()) return value.get<double>();
  if (value == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (value == "Infinity") return std::numeric_limits<double>::infinity();
  if (value == "-Infinity") return -std::numeric_limits<double>::infinity();
  throw Error(fmt::format("y {} is not a number", value.dump()));
}

}  // namespace

std::optional<PlotFormat> plot_format_of(const std::string& path) {
  std::string extension = fs::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const Device& device : kDevices) {
    if (extension == device.extension) return device.format;
  }
  return std::nullopt;
}

void plot_lines(const std::string& path, const std::vector<PlotSeries>& series,
                const PlotStyle& style) {
  draw_plot("plot_lines", path, series, style);
}

PlotReport::PlotReport(std::vector<std::string> y_keys, PlotReportOptions options)
    : y_keys_(std::move(y_keys)),
      x_is_epoch_(options.x_key() == "epoch"),
      trigger_(trigger_or(options.trigger(), 1, epoch)),
      filename_(options.filename()) {
  check_argument(!y_keys_.empty(), kWho, "y_keys", "must not be empty");
  std::set<std::string> seen;
  for (const std::string& key : y_keys_) {
    check_argument(!key.empty(), kWho, "y_keys", "must not contain an empty key");
    check_argument(seen.insert(key).second, kWho, "y_keys", "must not repeat a key",
                   fmt::format("'{}' twice", key));
    data_[key];
  }
  check_argument(options.x_key() == "epoch" || options.x_key() == "iteration", kWho, "x_key",
                 "must be \"epoch\" or \"iteration\"", fmt::format("'{}'", options.x_key()));
  check_argument(plot_format_of(filename_).has_value() && !fs::path(filename_).stem().empty(), kWho,
                 "filename", "must be a file name ending in .png, .svg or .pdf",
                 fmt::format("'{}'", filename_));
  for (const auto& [name, size] :
       {std::pair{"width", options.width()}, std::pair{"height", options.height()}}) {
    check_argument(size >= kMinSize && size <= kMaxSize, kWho, name,
                   fmt::format("must be in [{}, {}]", kMinSize, kMaxSize), size);
  }
  style_.title(options.title().empty() ? fs::path(filename_).filename().string() : options.title())
      .x_label(options.x_key())
      .grid(options.grid())
      .marker(options.marker())
      .width(options.width())
      .height(options.height());
}

void PlotReport::operator()(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;  // a data-parallel job plots on rank 0 only
  const Observation& observation = hook.observation();
  for (const std::string& key : y_keys_) {
    auto found = observation.find(key);
    if (found != observation.end()) summary_.add(key, found->second.value());
  }
  if (!trigger_ || !(*trigger_)(hook)) return;
  const std::map<std::string, double> means = summary_.means();
  summary_.reset();
  const double x = static_cast<double>(x_is_epoch_ ? hook.epoch() : hook.iteration());
  for (const auto& [key, mean] : means) data_[key].emplace_back(x, mean);
  if (has_points()) draw(hook);
}

void PlotReport::resume(TorchTrainerHook& hook) {
  if (hook.rank() != 0) return;  // it writes nothing there
  const std::string directory =
      (fs::path(hook.out()) / filename_).parent_path().lexically_normal().string();
  hook.lock_directory(directory);
  for (const std::string& removed : remove_temp_files(directory)) {
    warn(fmt::format("PlotReport: removed '{}' left by an interrupted write", removed));
  }
}

void PlotReport::initialize(TorchTrainerHook& hook) {
  if (hook.rank() == 0 && has_points()) draw(hook);
}

bool PlotReport::has_points() const {
  return std::any_of(data_.begin(), data_.end(),
                     [](const auto& entry) { return !entry.second.empty(); });
}

void PlotReport::draw(const TorchTrainerHook& hook) const {
  std::vector<PlotSeries> series;
  for (const std::string& key : y_keys_) series.push_back({key, data_.at(key)});
  draw_plot(kWho, (fs::path(hook.out()) / filename_).string(), series, style_);
}

StateDict PlotReport::state_dict() const {
  StateDict state;
  if (trigger_) state.merge(kTriggerPrefix, trigger_->state_dict());
  for (auto& entry : summary_.state_dict()) state.set(entry.first, entry.second);
  nlohmann::json points = nlohmann::json::object();
  for (const auto& [key, xy] : data_) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [x, y] : xy) list.push_back({x, y_to_json(y)});
    points[key] = std::move(list);
  }
  state.set(kPointsKey, points.dump());
  return state;
}

void PlotReport::load_state_dict(const StateDict& state) {
  std::map<std::string, PlotPoints> data;
  for (const std::string& key : y_keys_) data[key];
  try {
    const nlohmann::json points = nlohmann::json::parse(state.text(kPointsKey));
    if (!points.is_object()) throw Error("not a JSON object");
    for (const auto& [key, list] : points.items()) {
      if (!list.is_array()) throw Error(fmt::format("entry '{}' is not a list", key));
      auto target = data.find(key);
      for (const nlohmann::json& point : list) {
        if (!point.is_array() || point.size() != 2 || !point[0].is_number()) {
          throw Error(fmt::format("entry '{}' has a point that is not [x, y]", key));
        }
        const double y = y_from_json(point[1]);
        // A key this PlotReport does not plot (the run's y keys changed) is dropped.
        if (target != data.end()) target->second.emplace_back(point[0].get<double>(), y);
      }
    }
  } catch (const nlohmann::json::exception& error) {
    throw StateError(kWho, kPointsKey, fmt::format("malformed JSON: {}", error.what()));
  } catch (const StateError&) {
    throw;
  } catch (const Error& error) {
    throw StateError(kWho, kPointsKey, error.what());
  }
  DictSummary summary;
  summary.load_state_dict(state, kWho);
  if (trigger_) trigger_->load_state_dict(state.sub(kTriggerPrefix));
  summary_ = std::move(summary);
  data_ = std::move(data);
}

}  // namespace tth
