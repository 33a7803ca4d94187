// PlotReport and plot_lines (tth/extensions/plot_report.h): the points, the files PLplot
// writes (decoded by Python's zlib and XML parser, not just sniffed), resume and failures.
#include "tth/extensions/plot_report.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <thread>

#include "support.h"

namespace tth::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Small pictures keep the tests fast.
constexpr int kWidth = 240;
constexpr int kHeight = 180;

// The series colors of the palette (matplotlib's tab10), in drawing order.
constexpr int kBlue[] = {31, 119, 180};
constexpr int kOrange[] = {255, 127, 14};

// Checks every chunk's CRC, inflates the image data and undoes the row filters; prints
// "<width> <height>" and then, per color given as "r,g,b" arguments after the file, the
// number of pixels within a small distance of it (antialiasing blends the edges).
constexpr char kDecodePng[] = R"(
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'signature'
pos, idat, header = 8, b'', None
while True:
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) & 0xffffffff == crc, 'CRC of ' + repr(kind)
    if kind == b'IHDR':
        header = struct.unpack('>IIBBBBB', body)
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
    if kind == b'IEND':
        break
assert pos == len(data), 'bytes after IEND'
width, height, depth, color_type, _, _, interlace = header
assert depth == 8 and color_type in (2, 6) and interlace == 0, header
bpp = 3 if color_type == 2 else 4
raw = zlib.decompress(idat)
stride = width * bpp
assert len(raw) == height * (stride + 1), 'image data size'
rows, previous = [], bytearray(stride)
for y in range(height):
    kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = previous[i]
        c = previous[i - bpp] if i >= bpp else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else: assert kind == 0, 'filter %d' % kind
    rows.append(line)
    previous = line
print(width, height)
for spec in sys.argv[2:]:
    want = [int(v) for v in spec.split(',')]
    count = sum(1 for line in rows for x in range(width)
                if sum(abs(line[x * bpp + k] - want[k]) for k in range(3)) <= 30)
    print(count)
)";

// Parses the SVG (it must be well-formed XML) and prints the number of unfilled paths
// of each stroke color with exactly sys.argv[2] vertices, in drawing order: the data lines of
// that length.
constexpr char kSvgLines[] = R"(
import re, sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag
counts = {}
for path in root.iter('{http://www.w3.org/2000/svg}path'):
    # cairo before 1.17.6 writes a style attribute, later versions presentation attributes.
    style = dict(item.split(':', 1) for item in path.get('style', '').split(';') if ':' in item)
    style = {key.strip(): value.strip() for key, value in style.items()}
    fill = style.get('fill', path.get('fill', ''))
    stroke = re.fullmatch(r'rgb\(([^)]*)\)', style.get('stroke', path.get('stroke', '')))
    if fill != 'none' or not stroke:
        continue
    if len(re.findall(r'[ML]', path.get('d', ''))) != int(sys.argv[2]):
        continue
    rgb = ','.join(str(round(float(v.rstrip('%')) * 2.55)) for v in stroke.group(1).split(','))
    counts[rgb] = counts.get(rgb, 0) + 1
for rgb in counts:
    print(rgb, counts[rgb])
)";

// Prints the text of a PDF written by cairo, one word per line: the content streams are
// inflated and the strings of each TJ/Tj mapped through the fonts' ToUnicode tables.
constexpr char kPdfText[] = R"(
import re, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data.startswith(b'%PDF-') and data.rstrip().endswith(b'%%EOF'), 'header or trailer'
streams = []
for m in re.finditer(rb'/FlateDecode.*?>>\s*stream\r?\n', data, re.S):
    end = data.index(b'endstream', m.end())
    streams.append(zlib.decompress(data[m.end():end]))
table = {}
for s in streams:
    for code, uni in re.findall(rb'<([0-9a-f]{2})>\s*<([0-9a-f]{4})>', s):
        table[int(code, 16)] = chr(int(uni, 16))
def unescape(string):
    return re.sub(rb'\\([0-7]{1,3}|.)', lambda m: bytes([int(m.group(1), 8)])
                  if m.group(1)[:1] in b'01234567' else m.group(1), string)
for s in streams:
    shown = re.findall(rb'\[((?:\((?:[^)\\]|\\.)*\)|[-0-9. \n])*)\]\s*TJ', s)
    shown += [b'(' + single + b')' for single in re.findall(rb'\(((?:[^)\\]|\\.)*)\)\s*Tj', s)]
    for array in shown:
        # cairo writes the numbers of an axis as one array; a wide gap separates them.
        words, word = [], ''
        for string, number in re.findall(rb'\(((?:[^)\\]|\\.)*)\)|(-?[0-9.]+)', array):
            if number and float(number) < -300:
                words.append(word)
                word = ''
            word += ''.join(table.get(b, chr(b)) for b in unescape(string))
        for word in words + [word]:
            if word:
                print(word)
)";

std::string rgb(const int (&color)[3]) {
  return fmt::format("{},{},{}", color[0], color[1], color[2]);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> temp_files_in(const std::string& directory) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(directory)) {
    if (is_temp_file_name(entry.path().filename().string())) found.push_back(entry.path());
  }
  return found;
}

// A hook with one PlotReport (small pictures) in `out`, whose iterations report "main/loss",
// the iteration number (1, 2, ...), every iteration, and "validation/main/loss", ten times the
// epoch, at the last iteration of each epoch, as an evaluator reports it.
struct Training {
  Training(const std::string& out, PlotReportOptions options,
           std::vector<std::string> keys = {"main/loss", "validation/main/loss"},
           double iters_per_epoch = 3)
      : hook(HookOptions(iters_per_epoch).out(out)),
        plot(std::make_shared<PlotReport>(std::move(keys), options.width(kWidth).height(kHeight))),
        iters_per_epoch_(iters_per_epoch) {
    hook.extend(plot);
  }
  void iterations(int n) {
    for (int i = 0; i < n; ++i) {
      hook.run_iteration([&] {
        const int64_t next = hook.iteration() + 1;
        report("main/loss", static_cast<double>(next));
        if (std::fmod(static_cast<double>(next), iters_per_epoch_) == 0) {
          report("validation/main/loss", 10.0 * static_cast<double>(next) / iters_per_epoch_);
        }
      });
    }
  }
  TorchTrainerHook hook;
  std::shared_ptr<PlotReport> plot;

 private:
  double iters_per_epoch_;
};

TEST(PlotReport, PointsAreTheMeansOfEachEpochAndThePngDecodes) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions());
  run.iterations(9);                              // 3 epochs of 3
  const PlotPoints loss{{1, 2}, {2, 5}, {3, 8}};  // means of 1..3, 4..6, 7..9
  const PlotPoints validation{{1, 10}, {2, 20}, {3, 30}};
  EXPECT_EQ(run.plot->data().at("main/loss"), loss);
  EXPECT_EQ(run.plot->data().at("validation/main/loss"), validation);
  EXPECT_EQ(run.plot->data().size(), 2u);

  const std::string path = dir / "plot.png";
  const Bytes bytes = read_file(path);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(Bytes(bytes.begin(), bytes.begin() + 8),
            (Bytes{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}));
  EXPECT_EQ(std::string(bytes.begin() + 12, bytes.begin() + 16), "IHDR");
  const auto be32 = [&](std::size_t at) {
    return (uint32_t{bytes[at]} << 24) | (uint32_t{bytes[at + 1]} << 16) |
           (uint32_t{bytes[at + 2]} << 8) | uint32_t{bytes[at + 3]};
  };
  EXPECT_EQ(be32(16), static_cast<uint32_t>(kWidth));
  EXPECT_EQ(be32(20), static_cast<uint32_t>(kHeight));

  const auto decoded = lines_of(python(kDecodePng, {path, rgb(kBlue), rgb(kOrange)}));
  ASSERT_EQ(decoded.size(), 3u);
  EXPECT_EQ(decoded[0], fmt::format("{} {}", kWidth, kHeight));
  EXPECT_GT(std::stoi(decoded[1]), 20) << "no line in the first series' color";
  EXPECT_GT(std::stoi(decoded[2]), 20) << "no line in the second series' color";
  EXPECT_TRUE(temp_files_in(dir.path().string()).empty());
}

TEST(PlotReport, TheFileIsRedrawnAtEachTriggerAndNotBeforeAPoint) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions());
  run.iterations(2);
  EXPECT_FALSE(fs::exists(dir / "plot.png"));
  run.iterations(1);
  ASSERT_TRUE(fs::exists(dir / "plot.png"));
  const Bytes first = read_file(dir / "plot.png");
  run.iterations(3);
  EXPECT_NE(read_file(dir / "plot.png"), first);
}

TEST(PlotReport, SvgIsWellFormedWithOneLinePerKey) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions().filename("loss.svg"));
  run.iterations(12);  // 4 points per key
  const std::string text = python(kSvgLines, {dir / "loss.svg", "4"});
  // One data line per key, in the palette's first two colors (the legend's samples have 2
  // vertices, the axes and grid other colors).
  EXPECT_EQ(text, rgb(kBlue) + " 1\n" + rgb(kOrange) + " 1\n");
}

TEST(PlotReport, PdfIsCompleteAndHoldsTheLegendTitleAndLabel) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions().filename("curves/loss.pdf"));
  run.iterations(6);
  const Bytes bytes = read_file(dir / "curves/loss.pdf");
  ASSERT_GT(bytes.size(), 5u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 5), "%PDF-");
  // cairo's SVG draws text as outlines; the PDF keeps it as text, so the legend is checked here.
  const auto text = lines_of(python(kPdfText, {dir / "curves/loss.pdf"}));
  for (const char* expected : {"main/loss", "validation/main/loss", "loss.pdf", "epoch"}) {
    EXPECT_THAT(text, ::testing::Contains(expected)) << ::testing::PrintToString(text);
  }
}

TEST(PlotReport, IterationOnTheXAxis) {
  TempDir dir;
  Training run(dir.path().string(),
               PlotReportOptions().x_key("iteration").trigger({2, iteration}).title("by iteration"),
               {"main/loss"});
  run.iterations(6);
  EXPECT_EQ(run.plot->data().at("main/loss"), (PlotPoints{{2, 1.5}, {4, 3.5}, {6, 5.5}}));
  const auto text = lines_of(
      python(kPdfText, {[&] {
               // The same points drawn as a PDF show the x label and the title.
               plot_lines(dir / "copy.pdf", {{"main/loss", run.plot->data().at("main/loss")}},
                          PlotStyle().x_label("iteration").title("by iteration"));
               return dir / "copy.pdf";
             }()}));
  EXPECT_THAT(text, ::testing::Contains("iteration"));
  EXPECT_THAT(text, ::testing::Contains("by iteration"));
}

TEST(PlotReport, AKeyNeverReportedDrawsNothingWhileTheOthersDo) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions().filename("plot.svg"),
               {"never/reported", "main/loss"});
  run.iterations(9);
  EXPECT_TRUE(run.plot->data().at("never/reported").empty());
  EXPECT_EQ(run.plot->data().at("main/loss").size(), 3u);
  // main/loss is the first series drawn, so it takes the first color; nothing else is drawn.
  EXPECT_EQ(python(kSvgLines, {dir / "plot.svg", "3"}), rgb(kBlue) + " 1\n");
  plot_lines(dir / "plot.png", {{"never/reported", {}}, {"main/loss", {{1, 1}, {2, 2}}}},
             PlotStyle().width(kWidth).height(kHeight));
  const auto decoded = lines_of(python(kDecodePng, {dir / "plot.png", rgb(kOrange)}));
  ASSERT_EQ(decoded.size(), 2u);
  EXPECT_EQ(decoded[1], "0");
}

TEST(PlotReport, ATriggerThatNeverFiresWritesNoFile) {
  TempDir dir;
  Training run(dir.path().string(), PlotReportOptions().trigger(TriggerRef::never()));
  run.iterations(6);
  EXPECT_TRUE(run.plot->data().at("main/loss").empty());
  EXPECT_FALSE(fs::exists(dir / "plot.png"));
}

TEST(PlotReport, BadArgumentsAreNamed) {
  const std::vector<std::string> keys{"main/loss"};
  const std::vector<std::string> none, empty_key{"a", ""}, twice{"a", "a"};
  EXPECT_THROW_WITH(PlotReport{none}, Error, "PlotReport: y_keys must not be empty");
  EXPECT_THROW_WITH(PlotReport{empty_key}, Error, "PlotReport: y_keys must not contain");
  EXPECT_THROW_WITH(PlotReport{twice}, Error,
                    "PlotReport: y_keys must not repeat a key, got 'a' twice");
  EXPECT_THROW_WITH(PlotReport(keys, PlotReportOptions().x_key("epoch_detail")), Error,
                    "PlotReport: x_key must be \"epoch\" or \"iteration\", got 'epoch_detail'");
  EXPECT_THROW_WITH(PlotReport(keys, PlotReportOptions().filename("plot.jpg")), Error,
                    "PlotReport: filename must be a file name ending in .png, .svg or .pdf, got "
                    "'plot.jpg'");
  EXPECT_THROW_WITH(PlotReport(keys, PlotReportOptions().filename("plot")), Error,
                    "PlotReport: filename");
  EXPECT_THROW_WITH(PlotReport(keys, PlotReportOptions().filename(".png")), Error,
                    "PlotReport: filename");
  EXPECT_THROW_WITH(PlotReport(keys, PlotReportOptions().width(10)), Error,
                    "PlotReport: width must be in [64, 8192], got 10");
  EXPECT_THROW_WITH(plot_lines("out.gif", {}), Error,
                    "plot_lines: path must end in .png, .svg or .pdf, got 'out.gif'");
  EXPECT_THROW_WITH(plot_lines("out.png", {}, PlotStyle().height(100000)), Error,
                    "plot_lines: height must be in [64, 8192], got 100000");
  EXPECT_FALSE(fs::exists("out.gif"));
  EXPECT_FALSE(fs::exists("out.png"));
  // Upper case is the same format.
  EXPECT_EQ(plot_format_of("a/B.PNG"), PlotFormat::kPng);
  EXPECT_EQ(plot_format_of("b.Svg"), PlotFormat::kSvg);
  EXPECT_EQ(plot_format_of("c.pdf"), PlotFormat::kPdf);
  EXPECT_EQ(plot_format_of("d.png.bak"), std::nullopt);
}

TEST(PlotReport, TwoInOneHookGetDistinctNames) {
  TempDir dir;
  TorchTrainerHook hook(HookOptions(2).out(dir.path().string()));
  EXPECT_EQ(hook.extend(std::make_shared<PlotReport>(std::vector<std::string>{"a"})), "PlotReport");
  EXPECT_EQ(hook.extend(std::make_shared<PlotReport>(std::vector<std::string>{"b"},
                                                     PlotReportOptions().filename("b.png"))),
            "PlotReport_1");
}

// The resumed run: `split` iterations, the hook's state into a fresh hook, the rest.
struct Resumed {
  Resumed(const TempDir& dir, int split, int total, PlotReportOptions options) {
    StateDict state;
    {
      Training first(dir / "first", options);
      first.iterations(split);
      state = first.hook.state_dict();
    }
    second = std::make_unique<Training>(dir / "second", options);
    second->hook.load_state_dict(state);
    second->hook.start();
    file_after_start = read_file(dir / ("second/" + options.filename()));
    second->iterations(total - split);
  }
  std::unique_ptr<Training> second;
  Bytes file_after_start;
};

TEST(PlotReport, AResumedRunDrawsWhatAnUninterruptedOneDraws) {
  TempDir dir;
  Training straight(dir / "straight", PlotReportOptions());
  straight.iterations(12);
  // Split mid-epoch (7 = 2 epochs + 1), so the interval's summary must carry over too.
  Resumed resumed(dir, 7, 12, PlotReportOptions());
  EXPECT_EQ(resumed.second->plot->data(), straight.plot->data());
  EXPECT_EQ(resumed.second->plot->data().at("main/loss"),
            (PlotPoints{{1, 2}, {2, 5}, {3, 8}, {4, 11}}));
  // The file was drawn again at the start, from the loaded points (2 epochs of them).
  EXPECT_FALSE(resumed.file_after_start.empty());
  EXPECT_EQ(read_file(dir / "second/plot.png"), read_file(dir / "straight/plot.png"));
  {
    Training reference(dir / "reference", PlotReportOptions());
    reference.iterations(6);
    EXPECT_EQ(resumed.file_after_start, read_file(dir / "reference/plot.png"));
  }
}

TEST(PlotReport, StateKeepsNonFiniteValuesAndRejectsMalformedText) {
  PlotReport source({"main/loss", "other"});
  TempDir dir;
  {
    TorchTrainerHook hook(HookOptions(1).out(dir.path().string()));
    auto plot = std::make_shared<PlotReport>(std::vector<std::string>{"main/loss", "other"},
                                             PlotReportOptions().width(kWidth).height(kHeight));
    hook.extend(plot);
    const double values[] = {1.0, std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(), 2.0};
    for (double value : values) hook.run_iteration([&] { report("main/loss", value); });
    EXPECT_TRUE(fs::exists(dir / "plot.png"));  // a gap in the line, not a failure
    source.load_state_dict(plot->state_dict());
  }
  const PlotPoints& points = source.data().at("main/loss");
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[0], (std::pair<double, double>{1, 1}));
  EXPECT_TRUE(std::isnan(points[1].second));
  EXPECT_EQ(points[2].second, std::numeric_limits<double>::infinity());
  EXPECT_EQ(points[3], (std::pair<double, double>{4, 2}));
  EXPECT_TRUE(source.data().at("other").empty());

  const StateDict good = source.state_dict();
  EXPECT_THAT(good.text("points"), HasSubstr("\"NaN\""));
  for (const char* bad : {"{", "[]", R"({"main/loss": 3})", R"({"main/loss": [[1]]})",
                          R"({"main/loss": [["x", 1]]})", R"({"main/loss": [[1, "many"]]})"}) {
    StateDict state = good;
    state.set("points", std::string(bad));
    EXPECT_THROW_WITH(source.load_state_dict(state), StateError, "key 'points'") << bad;
    EXPECT_EQ(source.data().at("main/loss").size(), 4u) << "changed by a failed load: " << bad;
  }
  StateDict state = good;
  state.set("summary", std::string("not json"));
  EXPECT_THROW_WITH(source.load_state_dict(state), StateError, "PlotReport: key 'summary'");
  EXPECT_EQ(source.data().at("main/loss").size(), 4u);
}

// A read-only directory: writable for root too only as a read-only mount.
TEST(PlotLines, AnUnwritableDirectoryIsAnIOErrorAndLeavesNoTempFile) {
  TempDir dir;
  const std::string out = dir / "ro";
  fs::create_directories(out);
  const ReadOnlyDirectory read_only(out);
  if (!read_only.available()) GTEST_SKIP() << kNoReadOnlyDirectory;
  EXPECT_THROW_WITH(plot_lines(out + "/plot.png", {{"a", {{1, 1}, {2, 2}}}},
                               PlotStyle().width(kWidth).height(kHeight)),
                    IOError, out);
  EXPECT_TRUE(fs::is_empty(out));
}

// A write that fails half way (the file size limit stands in for a full disk): the previous
// picture stays and the temp file is removed.
TEST(PlotLines, AFailedWriteKeepsThePreviousFileAndRemovesTheTempFile) {
  TempDir dir;
  const std::string path = dir / "plot.png";
  const std::vector<PlotSeries> series{{"a", {{1, 1}, {2, 2}}}};
  plot_lines(path, series, PlotStyle().width(kWidth).height(kHeight));
  const Bytes before = read_file(path);
  ASSERT_GT(before.size(), 2048u);
  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* previous_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  try {
    plot_lines(path, {{"a", {{1, 2}, {2, 1}}}}, PlotStyle().width(kWidth).height(kHeight));
    ADD_FAILURE() << "no error beyond the file size limit";
  } catch (const IOError& error) {
    EXPECT_EQ(error.error_number(), EFBIG);
    EXPECT_THAT(error.what(), HasSubstr(".plot.png.tmp."));
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, previous_handler);
  EXPECT_EQ(read_file(path), before);
  EXPECT_TRUE(temp_files_in(dir.path().string()).empty());
}

TEST(PlotLines, TickNumbersFitTheirRange) {
  TempDir dir;
  plot_lines(dir / "tiny.pdf", {{"lr", {{0, 1e-5}, {1000, 3e-5}, {2000, -2e-5}}}},
             PlotStyle().width(kWidth).height(kHeight));
  const auto tiny = lines_of(python(kPdfText, {dir / "tiny.pdf"}));
  for (const char* number : {"3e-05", "0", "-2e-05", "1000", "2000"}) {
    EXPECT_THAT(tiny, ::testing::Contains(number)) << ::testing::PrintToString(tiny);
  }
  // Not PLplot's scaled numbers with a separate "(x10^-5)" that would run into the title.
  EXPECT_THAT(tiny, ::testing::Not(::testing::Contains(HasSubstr("x10"))));
  // Whole numbers on an axis of epochs; decimals as the step needs them.
  plot_lines(dir / "epochs.pdf", {{"loss", {{1, 0.5}, {2, 0.25}, {3, 0.3}}}},
             PlotStyle().width(kWidth).height(kHeight));
  const auto epochs = lines_of(python(kPdfText, {dir / "epochs.pdf"}));
  for (const char* number : {"1", "2", "3", "0.30", "0.45"}) {
    EXPECT_THAT(epochs, ::testing::Contains(number)) << ::testing::PrintToString(epochs);
  }
  EXPECT_THAT(epochs, ::testing::Not(::testing::Contains("1.5")));
}

// Text that PLplot would read as escapes (#), Pango as markup (<, &), or its cairo devices
// refuse (500 characters or more, with a message on stdout) is drawn as it is, or cut.
TEST(PlotLines, AwkwardTextIsDrawnLiterallyAndPLplotPrintsNothing) {
  TempDir dir;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  plot_lines(dir / "a.pdf", {{"a#b<&>", {{0, 0}, {1, 1e-9}}}, {std::string(600, 'x'), {{0, 1}}}},
             PlotStyle().title("50% #done\n").width(kWidth).height(kHeight));
  plot_lines(dir / "b.pdf", {}, PlotStyle().width(kWidth).height(kHeight));
  plot_lines(dir / "c.svg", {{"", {{0, 1}, {1, 2}}}}, PlotStyle().width(kWidth).height(kHeight));
  std::fflush(stdout);  // PLplot's printf may wait in stdout's buffer
  const std::string out = ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "");
  EXPECT_EQ(err, "");
  const auto text = lines_of(python(kPdfText, {dir / "a.pdf"}));
  EXPECT_THAT(text, ::testing::Contains("a#b<&>")) << ::testing::PrintToString(text);
  EXPECT_THAT(text, ::testing::Contains("50% #done ")) << ::testing::PrintToString(text);
  // The long label, cut at 200 characters, runs off the page.
  EXPECT_THAT(text, ::testing::Contains(::testing::StartsWith(std::string(20, 'x'))));
  // Without points the axes span [0, 1].
  EXPECT_THAT(lines_of(python(kPdfText, {dir / "b.pdf"})), ::testing::Contains("1.0"));
  // An empty label still has its line (and an empty legend entry).
  EXPECT_THAT(python(kSvgLines, {dir / "c.svg", "2"}), HasSubstr(rgb(kBlue) + " 2\n"));
}

TEST(PlotLines, ThreadsDrawAtTheSameTime) {
  TempDir dir;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < 3; ++i) {
          plot_lines(dir / fmt::format("t{}.png", t), {{"a", {{0, t}, {1, i}}}},
                     PlotStyle().width(kWidth).height(kHeight));
        }
      } catch (const std::exception& error) {
        errors[t] = error.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(errors[t], "");
    EXPECT_EQ(lines_of(python(kDecodePng, {dir / fmt::format("t{}.png", t)}))[0],
              fmt::format("{} {}", kWidth, kHeight));
  }
}

// PLplot reads its list of devices once per process, so the missing-driver cases run in a
// child process with PLPLOT_DRV_DIR pointing at a directory of our own.
TEST(PlotLinesChild, DISABLED_MissingDevice) {
  EXPECT_THROW_WITH(plot_lines("child.png", {{"a", {{1, 1}}}}), Error,
                    "plot_lines: PLplot has no 'pngcairo' device; install plplot-driver-cairo");
  EXPECT_FALSE(fs::exists("child.png"));
}

TEST(PlotLinesChild, DISABLED_NoDriversAtAll) {
  // PLplot calls exit() here unless its exit handler returns elsewhere: ours reports it.
  EXPECT_THROW_WITH(plot_lines("child.svg", {{"a", {{1, 1}}}}), Error, "No device drivers found");
  EXPECT_FALSE(fs::exists("child.svg"));
}

std::string run_child(const std::string& test, const std::string& driver_dir) {
  const CommandResult result = run_command(
      "PLPLOT_DRV_DIR=" + shell_quote(driver_dir) + " /proc/" + std::to_string(::getpid()) +
      "/exe --gtest_also_run_disabled_tests --gtest_filter=PlotLinesChild." + test);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, HasSubstr("[  PASSED  ] 1 test"));
  return result.output;
}

TEST(PlotLines, AMissingCairoDriverIsAClearError) {
  TempDir drivers;
  // A driver list with only PLplot's null device, as without plplot-driver-cairo.
  std::ofstream(drivers / "null.driver_info") << "null:Null device:-1:null:42:null\n";
  run_child("DISABLED_MissingDevice", drivers.path().string());
  TempDir empty;
  const std::string output = run_child("DISABLED_NoDriversAtAll", empty.path().string());
  EXPECT_THAT(output, ::testing::Not(HasSubstr("PLPLOT ERROR")));
}

}  // namespace
}  // namespace tth::test
