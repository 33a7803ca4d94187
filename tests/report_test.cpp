// LogReport, PrintReport and ProgressBar (include/tth/extensions/).
#include <chrono>
#include <cmath>
#include <limits>
#include <regex>
#include <sstream>
#include <thread>

#include "support.h"
#include "tth/extensions/log_report.h"
#include "tth/extensions/print_report.h"
#include "tth/extensions/progress_bar.h"

namespace tth {
namespace {

using Row = LogReport::Row;
using Body = std::function<void(int64_t)>;

// Runs `n` iterations; `body` gets the number of the iteration it runs in (1-based).
void run(TorchTrainerHook& hook, int n, const Body& body) {
  for (int i = 0; i < n; ++i) hook.run_iteration([&] { body(hook.iteration() + 1); });
}

// Values that differ by iteration and are not exact in binary, so a mean computed over other
// iterations, or in another order, would show.
void report_loss(int64_t iteration) {
  report("main/loss", 0.1 * static_cast<double>(iteration) + 1.0 / 3.0);
  if (iteration % 2 == 0) report("main/accuracy", 1.0 / static_cast<double>(iteration));
}

double loss_at(int64_t iteration) { return 0.1 * static_cast<double>(iteration) + 1.0 / 3.0; }

// The rows without elapsed_time, which differs between runs.
std::vector<Row> without_time(std::vector<Row> log) {
  for (Row& row : log) row.erase("elapsed_time");
  return log;
}

std::vector<std::string> keys_of(const Row& row) {
  std::vector<std::string> keys;
  for (const auto& entry : row) keys.push_back(entry.first);
  return keys;
}

// What Python's json module reads from a log file: the rows, each as its (key, value) pairs in
// file order. The script fails unless the text is exactly json.dump(rows, indent=4) and epoch
// and iteration are integers.
using FileRow = std::vector<std::pair<std::string, double>>;
std::vector<FileRow> read_log_with_python(const std::string& path) {
  const std::string output = test::python(R"(
import json, sys
text = open(sys.argv[1]).read()
rows = json.loads(text)
assert isinstance(rows, list), 'not a list'
assert json.dumps(rows, indent=4) == text, 'not the layout of json.dump(indent=4):\n' + text
for row in rows:
    assert isinstance(row['epoch'], int) and isinstance(row['iteration'], int), row
    for key, value in row.items():
        print('%s\t%.17g' % (key, value))
    print('--')
)",
                                          {path});
  std::vector<FileRow> rows;
  FileRow row;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (line == "--") {
      rows.push_back(std::move(row));
      row.clear();
      continue;
    }
    const auto tab = line.find('\t');
    if (tab == std::string::npos) {
      ADD_FAILURE() << "unexpected output: " << line;
      continue;
    }
    row.emplace_back(line.substr(0, tab), std::stod(line.substr(tab + 1)));
  }
  return rows;
}

// Expects the file rows to hold exactly the values of `log`, means first (by key), then
// epoch, iteration, elapsed_time.
void expect_file_equals(const std::vector<FileRow>& file, const std::vector<Row>& log) {
  ASSERT_EQ(file.size(), log.size());
  for (std::size_t r = 0; r < log.size(); ++r) {
    std::vector<std::string> expected_order;
    for (const auto& [key, value] : log[r]) {
      if (key != "epoch" && key != "iteration" && key != "elapsed_time") {
        expected_order.push_back(key);
      }
    }
    expected_order.insert(expected_order.end(), {"epoch", "iteration", "elapsed_time"});
    std::vector<std::string> order;
    for (const auto& [key, value] : file[r]) {
      order.push_back(key);
      ASSERT_EQ(log[r].count(key), 1u) << key;
      const double expected = log[r].at(key);
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(value)) << key;
      } else {
        EXPECT_EQ(value, expected) << "row " << r << " key " << key;
      }
    }
    EXPECT_EQ(order, expected_order) << "row " << r;
  }
}

std::shared_ptr<LogReport> add_log_report(TorchTrainerHook& hook, LogReportOptions options = {}) {
  auto log_report = std::make_shared<LogReport>(std::move(options));
  hook.extend(log_report);
  return log_report;
}

// ---- LogReport ----

TEST(LogReport, DefaultsAreChainers) {
  LogReport log_report;
  EXPECT_EQ(log_report.default_name(), "LogReport");
  EXPECT_EQ(log_report.default_priority(), priority::kReader);
  TorchTrainerHook hook{HookOptions(2).out("defaults")};
  EXPECT_EQ(hook.extend(std::make_shared<LogReport>()), "LogReport");
  run(hook, 5, [](int64_t) { report("x", 1.0); });
  // Called every iteration, a row per epoch: at iterations 2 and 4.
  ASSERT_EQ(hook.extension("LogReport") != nullptr, true);
  const auto& log = dynamic_cast<LogReport&>(*hook.extension("LogReport")).log();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].at("iteration"), 2);
  EXPECT_EQ(log[1].at("iteration"), 4);
}

TEST(LogReport, RowsHoldTheEpochMeansAndCounters) {
  TorchTrainerHook hook{HookOptions(4).out("by_epoch").stop_trigger({3, epoch})};
  auto log_report = add_log_report(hook);
  const auto before = hook.elapsed_time();
  while (!hook.done()) hook.run_iteration([&] { report_loss(hook.iteration() + 1); });

  const auto& log = log_report->log();
  ASSERT_EQ(log.size(), 3u);
  double previous_time = before;
  for (int e = 0; e < 3; ++e) {
    const Row& row = log[e];
    EXPECT_EQ(keys_of(row), (std::vector<std::string>{"elapsed_time", "epoch", "iteration",
                                                      "main/accuracy", "main/loss"}));
    const int64_t first = 4 * e + 1;
    // Summed in iteration order, as the running mean adds them.
    double loss = 0;
    for (int64_t i = first; i < first + 4; ++i) loss += loss_at(i);
    EXPECT_EQ(row.at("main/loss"), loss / 4);
    EXPECT_EQ(row.at("main/accuracy"),
              (1.0 / static_cast<double>(first + 1) + 1.0 / static_cast<double>(first + 3)) / 2);
    EXPECT_EQ(row.at("epoch"), e + 1);
    EXPECT_EQ(row.at("iteration"), 4 * (e + 1));
    EXPECT_GE(row.at("elapsed_time"), previous_time);
    previous_time = row.at("elapsed_time");
  }
  expect_file_equals(read_log_with_python("by_epoch/log"), log);
}

TEST(LogReport, IterationTriggerAndKeysFilter) {
  TorchTrainerHook hook{HookOptions(4).out("by_iteration")};
  auto log_report = add_log_report(hook, LogReportOptions()
                                             .keys(std::vector<std::string>{"a", "rare"})
                                             .trigger({3, iteration})
                                             .filename("logs/train.json"));
  run(hook, 7, [](int64_t i) {
    report("a", static_cast<double>(i));
    report("b", 100.0);
    if (i == 5) report("rare", 0.25);
  });
  const auto& log = log_report->log();
  ASSERT_EQ(log.size(), 2u);
  // b is filtered out; rare appears only in the interval it was reported in.
  EXPECT_EQ(log[0], (Row{{"a", 2.0},
                         {"epoch", 0},
                         {"iteration", 3},
                         {"elapsed_time", log[0].at("elapsed_time")}}));
  EXPECT_EQ(log[1], (Row{{"a", 5.0},
                         {"rare", 0.25},
                         {"epoch", 1},
                         {"iteration", 6},
                         {"elapsed_time", log[1].at("elapsed_time")}}));
  EXPECT_FALSE(std::filesystem::exists("by_iteration/log"));
  expect_file_equals(read_log_with_python("by_iteration/logs/train.json"), log);
}

TEST(LogReport, EmptyFilenameWritesNoFileAndNeverAppendsNothing) {
  TorchTrainerHook hook{HookOptions(2).out("no_file")};
  auto quiet = add_log_report(hook, LogReportOptions().filename("").trigger({1, iteration}));
  auto never = std::make_shared<LogReport>(LogReportOptions().trigger(TriggerRef::never()));
  hook.extend(never, "never");
  run(hook, 3, [](int64_t) { report("x", 2.0); });
  EXPECT_EQ(quiet->log().size(), 3u);
  EXPECT_TRUE(never->log().empty());
  EXPECT_FALSE(std::filesystem::exists("no_file/log"));
  // never() has no trigger state, and the state still round-trips.
  const StateDict state = never->state_dict();
  EXPECT_FALSE(state.contains("trigger/previous_iteration"));
  EXPECT_TRUE(quiet->state_dict().contains("trigger/previous_iteration"));
  never->load_state_dict(state);
}

TEST(LogReport, NonFiniteMeansAreWrittenAsPythonDoes) {
  TorchTrainerHook hook{HookOptions(1).out("non_finite")};
  auto log_report = add_log_report(hook);
  run(hook, 2, [](int64_t i) {
    report("loss", i == 1 ? std::nan("") : 1.5);
    report("grad", i == 1 ? std::numeric_limits<double>::infinity()
                          : -std::numeric_limits<double>::infinity());
  });
  const std::string text = [] {
    std::ifstream in("non_finite/log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  EXPECT_THAT(text, ::testing::HasSubstr("\"loss\": NaN"));
  EXPECT_THAT(text, ::testing::HasSubstr("\"grad\": Infinity"));
  EXPECT_THAT(text, ::testing::HasSubstr("\"grad\": -Infinity"));
  expect_file_equals(read_log_with_python("non_finite/log"), log_report->log());

  // The state keeps them too.
  LogReport restored;
  restored.load_state_dict(log_report->state_dict());
  ASSERT_EQ(restored.log().size(), 2u);
  EXPECT_TRUE(std::isnan(restored.log()[0].at("loss")));
  EXPECT_EQ(restored.log()[0].at("grad"), std::numeric_limits<double>::infinity());
  EXPECT_EQ(restored.log()[1].at("grad"), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(restored.log()[1].at("loss"), 1.5);
}

// One run: 16 iterations of 4 per epoch, a row per epoch; B is stopped after `stop_at`.
struct LogRun {
  explicit LogRun(const std::string& out)
      : hook(HookOptions(4).out(out).stop_trigger({16, iteration})) {
    log_report = add_log_report(hook);
  }
  void steps(int n) { run(hook, n, report_loss); }
  TorchTrainerHook hook;
  std::shared_ptr<LogReport> log_report;
};

TEST(LogReport, ResumeMidIntervalContinuesTheMeansWithoutDuplicates) {
  LogRun a("run_a");
  a.steps(16);
  ASSERT_EQ(a.log_report->log().size(), 4u);

  StateDict state;
  double saved_elapsed = 0;
  {
    LogRun b("run_b");
    b.steps(6);  // mid-epoch 2: iterations 5 and 6 are in the running means
    state = b.hook.state_dict();
    saved_elapsed = b.hook.elapsed_time();
    b.steps(4);  // the killed run goes on past its snapshot and writes the row of iteration 8
    ASSERT_EQ(read_log_with_python("run_b/log").size(), 2u);
  }
  LogRun resumed("run_b");
  resumed.hook.load_state_dict(state);
  ASSERT_EQ(resumed.log_report->log().size(), 1u);
  resumed.hook.start();
  // The file again matches the state: the row written after the snapshot is gone.
  expect_file_equals(read_log_with_python("run_b/log"), resumed.log_report->log());
  ASSERT_EQ(read_log_with_python("run_b/log").size(), 1u);

  resumed.steps(10);
  EXPECT_EQ(resumed.hook.iteration(), 16);
  EXPECT_EQ(without_time(resumed.log_report->log()), without_time(a.log_report->log()));
  for (std::size_t r = 1; r < resumed.log_report->log().size(); ++r) {
    EXPECT_GE(resumed.log_report->log()[r].at("elapsed_time"), saved_elapsed);
  }
  expect_file_equals(read_log_with_python("run_b/log"), resumed.log_report->log());
}

TEST(LogReport, MalformedStateIsRejectedAndChangesNothing) {
  LogRun source("malformed");
  source.steps(6);
  const StateDict good = source.log_report->state_dict();
  ASSERT_TRUE(good.contains("log"));
  ASSERT_TRUE(good.contains("summary/summary"));

  LogReport target;
  target.load_state_dict(good);
  ASSERT_EQ(target.log().size(), 1u);
  const std::vector<std::pair<std::string, std::string>> bad_logs = {
      {"not json", "malformed JSON"},
      {"{}", "not a JSON list"},
      {"[1]", "row 0 is not a JSON object"},
      {R"([{"iteration": 4}, {"main/loss": "x"}])", "row 1 entry 'main/loss' is not a number"},
      {R"([{"main/loss": null}])", "row 0 entry 'main/loss' is not a number: null"},
  };
  for (const auto& [text, problem] : bad_logs) {
    StateDict bad = good;
    bad.set("log", text);
    EXPECT_THROW_WITH(target.load_state_dict(bad), StateError,
                      "LogReport::load_state_dict: key 'log': " + problem);
    EXPECT_EQ(target.log().size(), 1u);
  }
  StateDict bad_summary = good;
  bad_summary.set("summary/summary", "[]");
  EXPECT_THROW_WITH(target.load_state_dict(bad_summary), StateError,
                    "LogReport::load_state_dict: key 'summary/summary'");

  // Through the manager the key carries the extension's place in the whole state.
  LogRun other("malformed_hook");
  StateDict whole = source.hook.state_dict();
  whole.set("extensions/LogReport/log", "[[]]");
  EXPECT_THROW_WITH(other.hook.load_state_dict(whole), StateError,
                    "key 'extensions/LogReport/log'");
  EXPECT_TRUE(other.log_report->log().empty());
}

// ---- PrintReport ----

TEST(PrintReport, PrintsTheHeaderOnceAndAlignedRows) {
  std::ostringstream out;
  TorchTrainerHook hook{HookOptions(4).out("print")};
  add_log_report(hook, LogReportOptions().trigger({2, iteration}));
  hook.extend(
      std::make_shared<PrintReport>(std::vector<std::string>{"epoch", "iteration", "main/loss",
                                                             "a_very_long_entry_name", "never"},
                                    PrintReportOptions().out(&out)));
  run(hook, 6, [](int64_t i) {
    report("main/loss", i == 2 ? 0.5 : (i < 5 ? 1.0 / 3.0 : 1234567.0));
    if (i == 3) report("a_very_long_entry_name", 1e-5);
  });
  const std::string blank10(10, ' ');
  const std::string blank22(22, ' ');
  EXPECT_EQ(out.str(),
            "epoch       iteration   main/loss   a_very_long_entry_name  never     \n"
            "0           2           0.416667    " +
                blank22 + "  " + blank10 +
                "  \n"
                "1           4           0.333333    1e-05                   " +
                blank10 +
                "  \n"
                "1           6           1.23457e+06  " +
                blank22 + "  " + blank10 + "  \n");
}

TEST(PrintReport, FormatsNumbersAsPythonsG) {
  std::ostringstream out;
  TorchTrainerHook hook{HookOptions(1).out("print_g")};
  add_log_report(hook, LogReportOptions().trigger({1, iteration}));
  hook.extend(
      std::make_shared<PrintReport>(std::vector<std::string>{"v"}, PrintReportOptions().out(&out)));
  const double values[] = {-0.000012345,
                           100000,
                           1e6,
                           0.1 + 0.2,
                           std::nan(""),
                           -std::nan(""),
                           -std::numeric_limits<double>::infinity()};
  run(hook, 7, [&](int64_t i) { report("v", values[i - 1]); });
  EXPECT_EQ(out.str(),
            "v         \n"
            "-1.2345e-05  \n"
            "100000      \n"
            "1e+06       \n"
            "0.3         \n"
            "nan         \n"
            "nan         \n"
            "-inf        \n");
}

TEST(PrintReport, DoesNotReprintRowsAfterAResume) {
  auto setup = [](TorchTrainerHook& hook, std::ostream& out) {
    add_log_report(hook, LogReportOptions().trigger({2, iteration}));
    hook.extend(std::make_shared<PrintReport>(std::vector<std::string>{"iteration"},
                                              PrintReportOptions().out(&out)));
  };
  std::ostringstream first_out;
  StateDict state;
  {
    TorchTrainerHook first{HookOptions(4).out("print_resume")};
    setup(first, first_out);
    run(first, 5, [](int64_t) {});
    state = first.state_dict();
  }
  EXPECT_EQ(first_out.str(), "iteration \n2           \n4           \n");

  std::ostringstream second_out;
  TorchTrainerHook second{HookOptions(4).out("print_resume")};
  setup(second, second_out);
  second.load_state_dict(state);
  run(second, 3, [](int64_t) {});
  EXPECT_EQ(second_out.str(), "iteration \n6           \n8           \n");
}

TEST(PrintReport, MissingOrWrongLogReportIsAnErrorNamingIt) {
  {
    std::ostringstream out;
    TorchTrainerHook hook{HookOptions(4).out("print_missing")};
    hook.extend(std::make_shared<PrintReport>(std::vector<std::string>{"epoch"},
                                              PrintReportOptions().out(&out)));
    EXPECT_THROW_WITH(hook.run_iteration([] {}), Error,
                      "PrintReport: log_report 'LogReport' names no registered extension");
  }
  {
    std::ostringstream out;
    TorchTrainerHook hook{HookOptions(4).out("print_wrong")};
    hook.extend(make_extension([](TorchTrainerHook&) {}), "my_log");
    hook.extend(std::make_shared<PrintReport>(std::vector<std::string>{"epoch"},
                                              PrintReportOptions().log_report("my_log").out(&out)));
    EXPECT_THROW_WITH(hook.run_iteration([] {}), Error,
                      "PrintReport: log_report 'my_log' names an extension that is not a "
                      "tth::LogReport");
  }
  {
    // A LogReport under another name works when named.
    std::ostringstream out;
    TorchTrainerHook hook{HookOptions(1).out("print_named")};
    hook.extend(std::make_shared<LogReport>(), "train_log");
    hook.extend(std::make_shared<PrintReport>(
        std::vector<std::string>{"epoch"}, PrintReportOptions().log_report("train_log").out(&out)));
    run(hook, 1, [](int64_t) {});
    EXPECT_EQ(out.str(), "epoch     \n1           \n");
  }
  EXPECT_THROW_WITH(PrintReport({"epoch"}, PrintReportOptions().out(nullptr)), Error,
                    "PrintReport: out must not be null");
}

// ---- ProgressBar ----

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ProgressBar, PlainModePrintsOneLinePerIntervalByEpochs) {
  std::ostringstream out;
  TorchTrainerHook hook{HookOptions(4).out("plain").stop_trigger({5, epoch})};
  hook.extend(std::make_shared<ProgressBar>(
      ProgressBarOptions().update_interval(5).out(&out).mode(ProgressMode::kAuto)));
  while (!hook.done()) hook.run_iteration([] {});
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  const std::string speed_and_eta = R"([0-9.]+ iters/sec, ETA \d+:\d\d:\d\d)";
  const std::string expected[] = {
      R"(iteration 5/20 \(25\.0%\), epoch 1\.25/5, )" + speed_and_eta,
      R"(iteration 10/20 \(50\.0%\), epoch 2\.50/5, )" + speed_and_eta,
      R"(iteration 15/20 \(75\.0%\), epoch 3\.75/5, )" + speed_and_eta,
      R"(iteration 20/20 \(100\.0%\), epoch 5\.00/5, [0-9.]+ iters/sec, ETA 0:00:00)",
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_TRUE(std::regex_match(lines[i], std::regex(expected[i]))) << lines[i];
  }
  EXPECT_EQ(out.str().find('\033'), std::string::npos);
}

TEST(ProgressBar, PlainModeByIterationsAndWithoutALength) {
  {
    std::ostringstream out;
    TorchTrainerHook hook{HookOptions(4).out("plain_iter").stop_trigger({10, iteration})};
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(5).out(&out).mode(ProgressMode::kPlain)));
    while (!hook.done()) hook.run_iteration([] {});
    const auto lines = lines_of(out.str());
    ASSERT_EQ(lines.size(), 2u) << out.str();
    EXPECT_TRUE(std::regex_match(
        lines[0], std::regex(R"(iteration 5/10 \(50\.0%\), epoch 1\.25/2\.50, .* iters/sec, .*)")))
        << lines[0];
  }
  {
    std::ostringstream out;
    TorchTrainerHook hook{HookOptions(4).out("plain_open")};
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(3).out(&out).mode(ProgressMode::kPlain)));
    test::run_empty(hook, 7);
    const auto lines = lines_of(out.str());
    ASSERT_EQ(lines.size(), 2u) << out.str();
    EXPECT_TRUE(
        std::regex_match(lines[0], std::regex(R"(iteration 3, epoch 0\.75, [0-9.e+-]+ iters/sec)")))
        << lines[0];
    EXPECT_TRUE(std::regex_match(lines[1], std::regex(R"(iteration 6, epoch 1\.50, .* iters/sec)")))
        << lines[1];
  }
}

TEST(ProgressBar, TerminalModeRedrawsChainersDisplay) {
  std::ostringstream out;
  {
    TorchTrainerHook hook{HookOptions(4).out("terminal").stop_trigger({2, epoch})};
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(2).bar_length(10).out(&out).mode(
            ProgressMode::kTerminal)));
    test::run_empty(hook, 2);
    const std::string first = out.str();
    const std::regex display(
        "\033\\[J"
        "     total \\[##\\.\\.\\.\\.\\.\\.\\.\\.\\] 25\\.00%\n"
        "this epoch \\[#####\\.\\.\\.\\.\\.\\] 50\\.00%\n"
        "         2 iter, 0 epoch / 2 epochs\n"
        " {0,9}[0-9.e+-]+ iters/sec\\. Estimated time to finish: [0-9]+:[0-9]{2}:[0-9]{2}"
        "(\\.[0-9]{6})?\\.\n"
        "\033\\[4A");
    EXPECT_TRUE(std::regex_match(first, display)) << first;
    while (!hook.done()) hook.run_iteration([] {});
    EXPECT_THAT(out.str(), ::testing::HasSubstr("     total [##########] 100.00%\n"
                                                "this epoch [..........]  0.00%\n"
                                                "         8 iter, 2 epoch / 2 epochs\n"));
  }
  // finalize erased the display.
  const std::string tail = "\033[4A\033[J";
  EXPECT_EQ(out.str().substr(out.str().size() - tail.size()), tail) << out.str();
}

TEST(ProgressBar, TerminalModeWithoutALengthShowsCountsAndSpeed) {
  std::ostringstream out;
  TorchTrainerHook hook{HookOptions(4).out("terminal_open")};
  hook.extend(std::make_shared<ProgressBar>(
      ProgressBarOptions().update_interval(6).bar_length(4).out(&out).mode(
          ProgressMode::kTerminal)));
  test::run_empty(hook, 6);
  EXPECT_TRUE(std::regex_match(out.str(), std::regex("\033\\[J"
                                                     "this epoch \\[##\\.\\.\\] 50\\.00%\n"
                                                     "         6 iter, 1 epoch\n"
                                                     " *[0-9.e+-]+ iters/sec\\.\n"
                                                     "\033\\[3A")))
      << out.str();
}

TEST(ProgressBar, SpeedIsMeasuredFromTheResumedIteration) {
  auto setup = [](TorchTrainerHook& hook, std::ostream& out) {
    hook.extend(std::make_shared<ProgressBar>(
        ProgressBarOptions().update_interval(10).out(&out).mode(ProgressMode::kPlain)));
  };
  StateDict state;
  {
    std::ostringstream ignored;
    TorchTrainerHook first{HookOptions(4).out("speed").stop_trigger({100, iteration})};
    setup(first, ignored);
    test::run_empty(first, 40);
    state = first.state_dict();
  }
  std::ostringstream out;
  TorchTrainerHook hook{HookOptions(4).out("speed").stop_trigger({100, iteration})};
  setup(hook, out);
  hook.load_state_dict(state);
  // Each iteration takes at least 2 ms, so 10 iterations run at most 500 per second; counting
  // the 40 iterations before the resume would make it about 2500.
  run(hook, 10, [](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(2)); });
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 1u) << out.str();
  std::smatch match;
  ASSERT_TRUE(std::regex_match(lines[0], match,
                               std::regex(R"(iteration 50/100 \(50\.0%\), epoch 12\.50/25, )"
                                          R"(([0-9.]+) iters/sec, ETA \d+:\d\d:\d\d)")))
      << lines[0];
  const double speed = std::stod(match[1]);
  EXPECT_GT(speed, 0);
  EXPECT_LE(speed, 500.5);
}

TEST(ProgressBar, BadOptionsAreRejected) {
  EXPECT_THROW_WITH(ProgressBar(ProgressBarOptions().update_interval(0)), Error,
                    "ProgressBar: update_interval must be > 0, got 0");
  EXPECT_THROW_WITH(ProgressBar(ProgressBarOptions().update_interval(-5)), Error,
                    "ProgressBar: update_interval must be > 0, got -5");
  EXPECT_THROW_WITH(ProgressBar(ProgressBarOptions().bar_length(0)), Error,
                    "ProgressBar: bar_length must be > 0, got 0");
  EXPECT_THROW_WITH(ProgressBar(ProgressBarOptions().out(nullptr)), Error,
                    "ProgressBar: out must not be null");
  EXPECT_FALSE(is_interactive_terminal(nullptr));
  std::ostringstream stream;
  EXPECT_FALSE(is_interactive_terminal(&stream));
}

}  // namespace
}  // namespace tth
