// PlotReport: a line plot of chosen report keys against epoch or iteration (Chainer's
// PlotReport), drawn with PLplot and rewritten whenever a point is added.
//
//   hook.extend(std::make_shared<tth::PlotReport>(
//       std::vector<std::string>{"main/loss", "validation/main/loss"},
//       tth::PlotReportOptions().filename("loss.png")));
//
// The extension is called every iteration (its default trigger): it adds each y key found in
// the observation to a DictSummary. When its own `trigger` (PlotReportOptions, default
// {1, epoch}) fires, every y key that was reported since the previous firing gets the point
// (x, mean), x being hook.epoch() or hook.iteration() as `x_key` says; the summary starts
// afresh and the whole plot is drawn again into `<hook.out()>/<filename>`, atomically
// (atomic_file.h), so a reader sees the previous picture or the new one. A key never reported
// has no line and no legend entry; the file is first written once some key has a point.
//
// The picture: axes with ticks and numeric labels, the x label (`x_key`), one line per key
// (with markers unless `marker(false)`), a legend with the key names to the right, a title
// (default: the file name) and an optional grid. The format follows the file name's extension:
// .png (Cairo, antialiased; width x height pixels), .svg (Cairo vectors, text as outlines) or
// .pdf (Cairo vectors, text with its font embedded); width x height points for both. Tick
// numbers are chosen to stay short (1, 2 or 5 times a power of ten; whole numbers for epochs
// and iterations; scientific notation for very small or large values). Non-finite values are
// kept in the data and leave a gap in the line.
//
// State (Stateful): the trigger's state under "trigger/", the interval's sums ("summary") and
// the points so far ("points", a JSON text {key: [[x, y], ...]}; a non-finite y is written as
// "NaN", "Infinity" or "-Infinity"). A resumed run therefore draws the same picture as an
// uninterrupted one, and it redraws the file in `initialize` when it has points, so that the
// file matches the loaded state (it may be older or missing after a crash). In its `resume`
// hook it locks the file's directory for the run and removes the temp files that a crashed
// run left there (atomic_file.h), as the snapshot extensions do.
//
// In a data-parallel job (HookOptions::process_group) it acts on rank 0 only: elsewhere it
// locks nothing, collects nothing and draws nothing; its state keeps the same keys (so every
// rank loads rank 0's snapshot).
//
// Errors: a bad argument is a tth::Error naming it; a device that PLplot lacks, or a failure
// inside PLplot, is a tth::Error ("PlotReport: PLplot has no 'pngcairo' device; install
// plplot-driver-cairo"); a file system failure is a tth::IOError naming the path, after which
// no temp file is left and the previous picture is intact.
//
// Thread safety: PLplot is not thread-safe, so every drawing of this library (plot_lines and
// PlotReport) holds one process-wide mutex. Code that calls PLplot directly at the same time
// from another thread is not protected. Drawing uses a stream of its own (plmkstrm ... plend1)
// and restores the caller's current stream, so a program's own PLplot stream stays as it was;
// PLplot's exit handler is replaced while drawing and reset to PLplot's default afterwards.
#pragma once

#include <torch/arg.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tth/extension.h"
#include "tth/reporter.h"
#include "tth/trigger.h"

namespace tth {

/// Points of one line, (x, y), in drawing order.
using PlotPoints = std::vector<std::pair<double, double>>;

/// One line of a plot: its legend label and its points. A point with a non-finite coordinate
/// is not drawn and breaks the line there. A series without finite points draws nothing and
/// has no legend entry.
struct PlotSeries {
  std::string label;
  PlotPoints points;
};

/// How plot_lines draws.
struct PlotStyle {
  /// Text above the plot. Default: none.
  TORCH_ARG(std::string, title);
  /// Label of the x axis. Default: none.
  TORCH_ARG(std::string, x_label);
  /// Label of the y axis. Default: none.
  TORCH_ARG(std::string, y_label);
  /// Light grid lines at the major ticks. Default true.
  TORCH_ARG(bool, grid) = true;
  /// A marker at each point. Default true. (A point without neighbours always gets one.)
  TORCH_ARG(bool, marker) = true;
  /// Width: pixels for PNG, points (1/72 inch) for SVG and PDF. In [64, 8192]. Default 640.
  TORCH_ARG(int, width) = 640;
  /// Height, as width. In [64, 8192]. Default 480.
  TORCH_ARG(int, height) = 480;
};

/// The file formats plot_lines writes, chosen by the path's extension (any letter case).
enum class PlotFormat { kPng, kSvg, kPdf };

/// The format of `path` by its extension (.png, .svg, .pdf), or nullopt for anything else.
std::optional<PlotFormat> plot_format_of(const std::string& path);

/// Draws `series` as lines into `path` (atomically, see atomic_file.h) in the format of its
/// extension, with a legend of the labels of the series that have points. Axis ranges cover
/// every finite point with a margin; [0, 1] when there is none. Throws tth::Error for an
/// extension other than .png/.svg/.pdf or a size out of range (naming the argument), for a
/// missing PLplot device or a PLplot failure; tth::IOError when the file cannot be written.
void plot_lines(const std::string& path, const std::vector<PlotSeries>& series,
                const PlotStyle& style = {});

/// Options of PlotReport.
struct PlotReportOptions {
  /// The x coordinate of a point: "epoch" or "iteration". Default "epoch".
  TORCH_ARG(std::string, x_key) = "epoch";
  /// When a point is added and the file redrawn. Default {1, epoch}.
  TORCH_ARG(TriggerRef, trigger) = TriggerRef(1, epoch);
  /// File name in hook.out() (subdirectories are created); its extension picks the format:
  /// .png, .svg or .pdf. Default "plot.png".
  TORCH_ARG(std::string, filename) = "plot.png";
  /// Title above the plot. Default (empty): the file name.
  TORCH_ARG(std::string, title);
  /// Grid lines. Default true.
  TORCH_ARG(bool, grid) = true;
  /// Markers at the points. Default true.
  TORCH_ARG(bool, marker) = true;
  /// Picture width, as PlotStyle's. Default 640.
  TORCH_ARG(int, width) = 640;
  /// Picture height, as PlotStyle's. Default 480.
  TORCH_ARG(int, height) = 480;
};

/// Plots report keys over training; see the header comment.
class PlotReport : public Extension {
 public:
  /// REQUIRES: `y_keys` non-empty, without empty or repeated keys; a valid x_key, filename
  /// extension and size. Throws tth::Error naming the argument otherwise.
  explicit PlotReport(std::vector<std::string> y_keys, PlotReportOptions options = {});

  /// Adds the observation's y keys to the summary; when the trigger fires, adds the points
  /// and redraws.
  void operator()(TorchTrainerHook& hook) override;
  /// Takes the lock of the file's directory (a subdirectory of out(); see
  /// TorchTrainerHook::lock_directory) and removes temp files that a crashed run left there.
  void resume(TorchTrainerHook& hook) override;
  /// Redraws the file when there are points (a resumed run), so it matches the state.
  void initialize(TorchTrainerHook& hook) override;

  /// "PlotReport"; a second one in the same hook is named "PlotReport_1" by the hook.
  std::string default_name() const override { return "PlotReport"; }

  /// {"trigger/...", "summary", "points"}; see the header comment.
  StateDict state_dict() const override;
  /// Throws tth::StateError naming "summary" or "points" for a malformed text; changes
  /// nothing then.
  void load_state_dict(const StateDict& state) override;

  /// The points so far, by y key (every y key is present, possibly without points).
  const std::map<std::string, PlotPoints>& data() const noexcept { return data_; }
  /// The y keys, in legend order.
  const std::vector<std::string>& y_keys() const noexcept { return y_keys_; }
  /// The file it writes, relative to hook.out().
  const std::string& filename() const noexcept { return filename_; }

 private:
  bool has_points() const;
  void draw(const TorchTrainerHook& hook) const;

  std::vector<std::string> y_keys_;
  bool x_is_epoch_;
  std::shared_ptr<Trigger> trigger_;  // null: never plots
  std::string filename_;
  PlotStyle style_;
  DictSummary summary_;
  std::map<std::string, PlotPoints> data_;
};

}  // namespace tth
