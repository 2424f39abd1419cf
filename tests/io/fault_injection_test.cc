// Fault injection while writing, through the real `compress` binary (label io, so also under ASan/UBSan):
// the process is interrupted (SIGINT, SIGTERM, SIGKILL) at many moments while it writes a model, its
// external data and its reports; it runs out of space (RLIMIT_FSIZE, a full tmpfs); it meets a read-only
// folder, odd output paths (a directory, a FIFO, symbolic links, a file used as a folder) and a second run
// writing the same files at the same time. Afterwards every output is absent, the previous file or the
// complete new file (byte-identical to an uninterrupted run: output is deterministic), a model is never
// paired with the wrong external data, the input is byte-identical and, except after SIGKILL, no
// temporary file is left.

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "compress/io/onnx_io.h"
#include "compress/util/fs.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ListDir;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

constexpr int kExitUsage = 2;
constexpr int kExitIO = 4;
// A run that blocks (on a FIFO, say) is a failure, not a hang of the test suite.
constexpr double kChildTimeoutSeconds = 60;

struct SpawnOptions {
  rlim_t file_size_limit = RLIM_INFINITY;  // RLIMIT_FSIZE of the child
  bool as_nobody = false;                  // drop to the user "nobody" before exec
};

// The compress binary in a child process that the test can signal at any moment.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args, const SpawnOptions& opt = {}) {
    if (opt.as_nobody) ::chmod(io_.path().c_str(), 0777);
    out_path_ = io_ / "stdout";
    err_path_ = io_ / "stderr";
    std::vector<std::string> all{COMPRESS_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    uid_t uid = 0;
    gid_t gid = 0;
    if (opt.as_nobody) {
      const passwd* pw = ::getpwnam("nobody");
      uid = pw != nullptr ? pw->pw_uid : 65534;
      gid = pw != nullptr ? pw->pw_gid : 65534;
    }
    start_ = std::chrono::steady_clock::now();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      const int out_fd = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
      const int err_fd = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
      const int null_fd = ::open("/dev/null", O_RDONLY);
      ::dup2(out_fd, 1);
      ::dup2(err_fd, 2);
      ::dup2(null_fd, 0);
      if (opt.file_size_limit != RLIM_INFINITY) {
        const rlimit lim{opt.file_size_limit, opt.file_size_limit};
        if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(126);
      }
      if (opt.as_nobody && (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0))
        ::_exit(126);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  void Signal(int sig) const { ::kill(pid_, sig); }
  // The exit code, or 128 + the signal that ended the child; -1 (and the child killed) on a timeout.
  int Wait() {
    if (status_ >= 0) return status_;
    int st = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) break;
      if (Seconds() > kChildTimeoutSeconds) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        status_ = -1;
        return status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    seconds_ = Seconds();
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return status_;
  }
  double seconds() const { return seconds_; }
  std::string err() const { return ReadBytes(err_path_); }
  std::string out() const { return ReadBytes(out_path_); }

 private:
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  TempDir io_;
  std::string out_path_, err_path_;
  pid_t pid_ = -1;
  int status_ = -1;
  double seconds_ = 0;
  std::chrono::steady_clock::time_point start_;
};

int RunToEnd(const std::vector<std::string>& args, std::string* err = nullptr, const SpawnOptions& opt = {}) {
  Child c(args, opt);
  const int code = c.Wait();
  if (err != nullptr) *err = c.err();
  return code;
}

bool OneLine(const std::string& s) { return !s.empty() && s.back() == '\n' && s.find('\n') == s.size() - 1; }

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> TempFiles(const std::string& dir) {
  std::vector<std::string> temps;
  for (const auto& name : ListDir(dir)) {
    if (name.find(".tmp-") != std::string::npos) temps.push_back(name);
  }
  return temps;
}

// x float32[N, width] -> `layers` x (MatMul by a width x width weight -> Relu) -> y: `layers` * width^2
// * 4 bytes of distinct pseudo-random weights.
Model BigModel(int layers, int64_t width) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.producer_name = "compress-tests";
  Graph& g = m.graph;
  g.name = "big";
  g.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(width)}), ""});
  g.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(width)}), ""});
  uint64_t state = 0x2545f4914f6cdd1dull;
  std::string prev = "x";
  for (int l = 0; l < layers; ++l) {
    std::vector<float> w(static_cast<size_t>(width * width));
    for (float& v : w) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      v = (static_cast<float>(state >> 40) / 16777216.0f - 0.5f) * 0.1f;
    }
    const std::string s = std::to_string(l);
    g.initializers.push_back(Tensor::FromVector<float>({width, width}, w, "W" + s));
    g.nodes.push_back(Node{"matmul" + s, "MatMul", "", {prev, "W" + s}, {"h" + s}, {}, ""});
    const std::string out = l + 1 == layers ? "y" : "r" + s;
    g.nodes.push_back(Node{"relu" + s, "Relu", "", {"h" + s}, {out}, {}, ""});
    prev = out;
  }
  return m;
}

// The sanitizer build (Debug, ASan + UBSan) is many times slower, in this process and in the binary: it
// runs the same checks on a smaller model and fewer interruptions to stay within its time budget.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// 6 x 4 MiB of weights (1 x 1 MiB when sanitized), stored with external data: the input of the
// interrupted runs.
constexpr int kBigLayers = kSanitized ? 1 : 6;
constexpr int64_t kBigWidth = kSanitized ? 512 : 1024;
constexpr rlim_t kBigDataBytes = rlim_t{kBigLayers} * kBigWidth * kBigWidth * 4;
// Interruptions per signal.
constexpr int kInterruptions = kSanitized ? 8 : 20;
constexpr int kSpanRounds = 4;  // InterruptMany: at most this many rounds of runs, each span 3x the last

struct Files {
  std::map<std::string, std::string> bytes;  // name in the folder -> content
};

Files Snapshot(const std::string& dir, const std::vector<std::string>& names) {
  Files f;
  for (const auto& n : names) {
    if (Exists(dir + "/" + n)) f.bytes[n] = ReadBytes(dir + "/" + n);
  }
  return f;
}

void Restore(const std::string& dir, const Files& f) {
  std::error_code ec;
  for (const auto& name : ListDir(dir)) std::filesystem::remove_all(dir + "/" + name, ec);
  for (const auto& [name, bytes] : f.bytes) WriteBytes(dir + "/" + name, bytes);
}

// A complete report: valid JSON of our schema (its timings differ from run to run), or Markdown with the
// reference's lines up to the last.
bool CompleteJsonReport(const std::string& s) {
  try {
    const auto j = nlohmann::json::parse(s);
    return j.at("schema") == "compress.report/1" && !s.empty() && s.back() == '\n';
  } catch (const std::exception&) {
    return false;
  }
}
std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t nl = s.find('\n', pos);
    lines.push_back(s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return lines;
}
bool CompleteMarkdownReport(const std::string& s, const std::string& reference) {
  const auto a = Lines(s), b = Lines(reference);
  return !s.empty() && s.back() == '\n' && a.size() == b.size() && a.front() == b.front() &&
         a.back() == b.back();
}

// The scene of the interruption tests: the input model with external data in in/, reference outputs of
// an uninterrupted run (and of a different, --fp16, run: the "previous" outputs) in ref/ and prev/.
class WriteFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* d : {"in", "out", "ref", "prev"}) std::filesystem::create_directory(tmp_ / d);
    SaveOptions so;
    so.external_data = SaveOptions::ExternalData::kAlways;
    SaveModel(BigModel(kBigLayers, kBigWidth), input_, so);
    input_files_ = Snapshot(tmp_ / "in", {"big.onnx", "big.onnx.data"});
    ASSERT_EQ(input_files_.bytes.size(), 2u);
    ASSERT_EQ(input_files_.bytes["big.onnx.data"].size(), size_t{kBigLayers} * kBigWidth * kBigWidth * 4);
    Child ref(Args(tmp_ / "ref", {}));
    ASSERT_EQ(ref.Wait(), 0) << ref.err();
    run_seconds_ = ref.seconds();
    reference_ = Snapshot(tmp_ / "ref", kOutputs);
    ASSERT_EQ(reference_.bytes.size(), kOutputs.size());
    ASSERT_EQ(RunToEnd(Args(tmp_ / "prev", {"--fp16"})), 0);
    previous_ = Snapshot(tmp_ / "prev", kOutputs);
    ASSERT_EQ(previous_.bytes.size(), kOutputs.size());
    ASSERT_NE(previous_.bytes["model.onnx"], reference_.bytes["model.onnx"]);
    ASSERT_NE(previous_.bytes["model.onnx.data"], reference_.bytes["model.onnx.data"]);
  }

  std::vector<std::string> Args(const std::string& out_dir, std::vector<std::string> extra) const {
    std::vector<std::string> a{input_,
                               "-o",
                               out_dir + "/model.onnx",
                               "--external-data",
                               "--report",
                               out_dir + "/report.json",
                               "--report-md",
                               out_dir + "/report.md",
                               "-q"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  void ExpectInputUntouched() const {
    for (const auto& [name, bytes] : input_files_.bytes) {
      EXPECT_TRUE(ReadBytes(tmp_ / "in/" + name) == bytes) << name << " changed";
    }
    EXPECT_EQ(ListDir(tmp_ / "in").size(), 2u);
  }

  enum class State { kAbsent, kPrevious, kNew, kPartial };
  static const char* Name(State s) {
    return s == State::kAbsent     ? "absent"
           : s == State::kPrevious ? "previous"
           : s == State::kNew      ? "new"
                                   : "PARTIAL";
  }
  State StateOf(const std::string& name, bool had_previous) const {
    const std::string path = tmp_ / "out/" + name;
    if (!Exists(path)) return State::kAbsent;
    const std::string bytes = ReadBytes(path);
    if (had_previous && bytes == previous_.bytes.at(name)) return State::kPrevious;
    const std::string& ref = reference_.bytes.at(name);
    if (name == "report.json") return CompleteJsonReport(bytes) ? State::kNew : State::kPartial;
    if (name == "report.md") return CompleteMarkdownReport(bytes, ref) ? State::kNew : State::kPartial;
    return bytes == ref ? State::kNew : State::kPartial;
  }

  // Interrupts `iterations` runs with `sig` at delays spread over the whole run (and a little past it),
  // half of them over previous outputs, and checks every output after each.
  void InterruptMany(int sig, int iterations) {
    std::mt19937 rng(20261203u + static_cast<unsigned>(sig));
    std::uniform_real_distribution<double> jitter(0.0, 1.0);
    // Runs in this loop take longer than the reference (the previous outputs are rewritten just before,
    // and the disk is busier): the delays go well past the reference's duration.
    // On a loaded machine a run can take several times the reference: when no signal landed after the
    // commit (or none before it), the same number of runs is repeated with the delays stretched (or
    // shrunk), at most kSpanRounds times; every run's outputs are checked all the same.
    double span = run_seconds_ * 1.6;
    std::map<std::string, int> tally;
    int finished = 0, stale_temps = 0, runs = 0;
    const auto committed_runs = [&tally] {
      int n = 0;
      for (const auto& [k, c] : tally) n += k.rfind("model new", 0) == 0 ? c : 0;
      return n;
    };
    for (int round = 0; round < kSpanRounds; ++round) {
      if (round > 0) {
        const int c = committed_runs();
        if (c > 0 && c < runs) break;
        span = c == 0 ? span * 3.0 : span / 3.0;
      }
      for (int i = 0; i < iterations; ++i, ++runs) {
        const bool had_previous = i % 2 == 1;
        Restore(tmp_ / "out", had_previous ? previous_ : Files{});
        const double delay = span * (i + jitter(rng)) / iterations;
        SCOPED_TRACE("run " + std::to_string(i) + ": signal " + std::to_string(sig) + " after " +
                     std::to_string(delay) + " s" + (had_previous ? ", over previous outputs" : ""));
        Child c(Args(tmp_ / "out", {}));
        std::this_thread::sleep_for(std::chrono::duration<double>(delay));
        c.Signal(sig);
        const int code = c.Wait();
        EXPECT_TRUE(code == 0 || code == 128 + sig) << "exit " << code << ": " << c.err();
        if (code == 0) ++finished;
        const State model = StateOf("model.onnx", had_previous),
                    data = StateOf("model.onnx.data", had_previous);
        const State json = StateOf("report.json", had_previous), md = StateOf("report.md", had_previous);
        for (State s : {model, data, json, md}) {
          EXPECT_NE(s, State::kPartial);
        }
        // The model's name never shows a model with another run's data.
        if (model == State::kNew || model == State::kPrevious) {
          EXPECT_EQ(data, model) << "model " << Name(model);
        }
        if (code == 0) {
          for (State s : {model, data, json, md}) {
            EXPECT_EQ(s, State::kNew);
          }
        }
        ++tally[std::string("model ") + Name(model) + ", data " + Name(data)];
        const auto temps = TempFiles(tmp_ / "out");
        if (sig == SIGKILL) {
          stale_temps += static_cast<int>(temps.size());
        } else {
          EXPECT_TRUE(temps.empty()) << temps.size() << " temporary files left, first " << temps[0];
        }
      }
    }
    ExpectInputUntouched();  // nothing restores it: a change in any run would show here
    std::string summary;
    for (const auto& [k, n] : tally) summary += " [" + k + ": " + std::to_string(n) + "]";
    std::cout << "signal " << sig << ", " << runs << " runs (reference " << run_seconds_ << " s, last span "
              << span << " s): " << finished << " finished;" << summary
              << "; temporary files left by SIGKILL: " << stale_temps << "\n";
    // The signals did land both before and after the model was committed.
    const int committed = committed_runs();
    EXPECT_GT(committed, 0);
    EXPECT_LT(committed, runs);
  }

  TempDir tmp_;
  const std::string input_ = tmp_ / "in/big.onnx";
  const std::vector<std::string> kOutputs{"model.onnx", "model.onnx.data", "report.json", "report.md"};
  Files input_files_, reference_, previous_;
  double run_seconds_ = 0;
};

TEST_F(WriteFaults, SigintAtAnyMomentLeavesCompleteOrPreviousOutputsAndNoTemporaryFile) {
  InterruptMany(SIGINT, kInterruptions);
}

TEST_F(WriteFaults, SigtermAtAnyMomentLeavesCompleteOrPreviousOutputsAndNoTemporaryFile) {
  InterruptMany(SIGTERM, kInterruptions / 2);
}

TEST_F(WriteFaults, SigkillAtAnyMomentLeavesCompleteOrPreviousOutputs) {
  InterruptMany(SIGKILL, kInterruptions);
}

TEST_F(WriteFaults, TwoRunsWritingTheSameFilesEndWithOneCompleteSet) {
  for (int round = 0; round < (kSanitized ? 2 : 3); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Restore(tmp_ / "out", round == 1 ? previous_ : Files{});
    Child a(Args(tmp_ / "out", {})), b(Args(tmp_ / "out", {}));
    EXPECT_EQ(a.Wait(), 0) << a.err();
    EXPECT_EQ(b.Wait(), 0) << b.err();
    for (const auto& name : kOutputs) EXPECT_EQ(StateOf(name, false), State::kNew) << name;
    EXPECT_TRUE(TempFiles(tmp_ / "out").empty());
    ExpectInputUntouched();
  }
  // Two different runs (default and --fp16) racing for the same output: the model and its data come
  // from the same run, whichever commits last.
  std::map<std::string, int> winners;
  for (int round = 0; round < (kSanitized ? 2 : 4); ++round) {
    SCOPED_TRACE("mixed round " + std::to_string(round));
    Restore(tmp_ / "out", Files{});
    const bool fp16_first = round % 2 == 0;
    Child a(Args(tmp_ / "out", fp16_first ? std::vector<std::string>{"--fp16"} : std::vector<std::string>{}));
    Child b(Args(tmp_ / "out", fp16_first ? std::vector<std::string>{} : std::vector<std::string>{"--fp16"}));
    EXPECT_EQ(a.Wait(), 0) << a.err();
    EXPECT_EQ(b.Wait(), 0) << b.err();
    const std::string model = ReadBytes(tmp_ / "out/model.onnx"),
                      data = ReadBytes(tmp_ / "out/model.onnx.data");
    const bool is_new =
        model == reference_.bytes["model.onnx"] && data == reference_.bytes["model.onnx.data"];
    const bool is_fp16 = model == previous_.bytes["model.onnx"] && data == previous_.bytes["model.onnx.data"];
    EXPECT_TRUE(is_new || is_fp16) << "the model and its data file come from different runs";
    ++winners[is_new ? "float32" : is_fp16 ? "fp16" : "mixed"];
    EXPECT_TRUE(CompleteJsonReport(ReadBytes(tmp_ / "out/report.json")));
    EXPECT_TRUE(TempFiles(tmp_ / "out").empty());
  }
  std::cout << "mixed races won by float32 " << winners["float32"] << ", fp16 " << winners["fp16"] << "\n";
}

TEST_F(WriteFaults, FileSizeLimitIsExit4NamingTheFileWithNoPartialOutput) {
  // The data file hits a limit of half its size: SIGXFSZ must not kill the process, write() fails with EFBIG.
  for (const bool had_previous : {false, true}) {
    SCOPED_TRACE(had_previous ? "over previous outputs" : "into an empty folder");
    Restore(tmp_ / "out", had_previous ? previous_ : Files{});
    SpawnOptions lim;
    lim.file_size_limit = kBigDataBytes / 2;
    std::string err;
    EXPECT_EQ(RunToEnd(Args(tmp_ / "out", {}), &err, lim), kExitIO) << err;
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_NE(err.find("'" + tmp_ / "out/model.onnx.data" + "'"), std::string::npos) << err;
    EXPECT_NE(err.find("file too large"), std::string::npos) << err;
    EXPECT_TRUE(Snapshot(tmp_ / "out", kOutputs).bytes == (had_previous ? previous_ : Files{}).bytes);
    EXPECT_EQ(ListDir(tmp_ / "out").size(), had_previous ? kOutputs.size() : 0u);
    ExpectInputUntouched();
  }
  // Without external data the model file itself hits the limit.
  Restore(tmp_ / "out", Files{});
  SpawnOptions lim;
  lim.file_size_limit = kBigDataBytes / 2;
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/inline.onnx"}, &err, lim), kExitIO) << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("'" + tmp_ / "out/inline.onnx" + "': file too large"), std::string::npos) << err;
  EXPECT_TRUE(ListDir(tmp_ / "out").empty());
}

TEST(WriteFaultsSmall, FileSizeLimitOnTheReportIsExit4AndNoPartialReport) {
  // The model fits under the limit, the JSON report does not.
  TempDir tmp;
  WriteBytes(tmp / "tiny.onnx", SerializeModel(testing::TinyModel()));
  std::string err;
  ASSERT_EQ(RunToEnd({tmp / "tiny.onnx", "-o", tmp / "ref.onnx", "--report", tmp / "ref.json", "-q"}, &err),
            0)
      << err;
  const size_t model_bytes = ReadBytes(tmp / "ref.onnx").size(),
               report_bytes = ReadBytes(tmp / "ref.json").size();
  ASSERT_LT(model_bytes * 2, report_bytes);
  std::filesystem::create_directory(tmp / "out");
  SpawnOptions lim;
  lim.file_size_limit = model_bytes + (report_bytes - model_bytes) / 2;
  EXPECT_EQ(RunToEnd({tmp / "tiny.onnx", "-o", tmp / "out/tiny.onnx", "--report", tmp / "out/report.json"},
                     &err, lim),
            kExitIO)
      << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("'" + tmp / "out/report.json" + "': file too large"), std::string::npos) << err;
  EXPECT_EQ(ListDir(tmp / "out"), std::vector<std::string>{"tiny.onnx"});
  EXPECT_EQ(ReadBytes(tmp / "out/tiny.onnx"), ReadBytes(tmp / "ref.onnx"));
}

TEST(WriteFaultsSmall, FileSizeLimitOnTheCalibrationTableIsExit4AndNoPartialTable) {
  // The calibration table is written while the passes run, before the model.
  TempDir tmp;
  const std::vector<std::string> base{testing::SourcePath("models/cnn.onnx"),
                                      "--int8",
                                      "--calib",
                                      testing::SourcePath("models/calib"),
                                      "--calib-limit",
                                      kSanitized ? "2" : "16",
                                      "-q"};
  auto args = base;
  for (const std::string& a :
       {std::string("-o"), tmp / "ref.onnx", std::string("--calib-table"), tmp / "ref.json"}) {
    args.push_back(a);
  }
  std::string err;
  ASSERT_EQ(RunToEnd(args, &err), 0) << err;
  const size_t table_bytes = ReadBytes(tmp / "ref.json").size();
  ASSERT_GT(table_bytes, 1000u);
  std::filesystem::create_directory(tmp / "out");
  args = base;
  for (const std::string& a :
       {std::string("-o"), tmp / "out/cnn.onnx", std::string("--calib-table"), tmp / "out/table.json"}) {
    args.push_back(a);
  }
  SpawnOptions lim;
  lim.file_size_limit = table_bytes / 2;
  EXPECT_EQ(RunToEnd(args, &err, lim), kExitIO) << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("'" + tmp / "out/table.json" + "': file too large"), std::string::npos) << err;
  EXPECT_TRUE(ListDir(tmp / "out").empty());
  if (kSanitized) return;  // one more calibration run is too slow there
  // Without the limit the same command writes the same table.
  EXPECT_EQ(RunToEnd(args, &err), 0) << err;
  EXPECT_EQ(ReadBytes(tmp / "out/table.json"), ReadBytes(tmp / "ref.json"));
}

// A private mount namespace for this test process, so that its mounts vanish with it; false when
// mounting is not permitted here.
bool PrivateMounts(std::string* why) {
  static int state = 0;  // 0 unknown, 1 yes, 2 no
  static std::string reason;
  if (state == 0) {
    if (::unshare(CLONE_NEWNS) != 0) {
      reason = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    } else if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      reason = std::string("making / private: ") + std::strerror(errno);
    }
    state = reason.empty() ? 1 : 2;
  }
  *why = reason;
  return state == 1;
}

struct Mounted {
  std::string dir;
  ~Mounted() {
    if (!dir.empty()) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

TEST_F(WriteFaults, FullFileSystemIsExit4WithNoPartialOutput) {
  std::string why;
  if (!PrivateMounts(&why)) GTEST_SKIP() << "mounting a small tmpfs is not permitted here (" << why << ")";
  const std::string dir = tmp_ / "out";
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "mounting a small tmpfs is not permitted here (" << std::strerror(errno) << ")";
  }
  Mounted m{dir};
  for (const bool external : {true, false}) {
    SCOPED_TRACE(external ? "with external data" : "model only");
    std::string err;
    std::vector<std::string> args{input_, "-o", dir + "/model.onnx", "-q"};
    if (external) args.push_back("--external-data");
    EXPECT_EQ(RunToEnd(args, &err), kExitIO) << err;
    EXPECT_TRUE(OneLine(err)) << err;
    const std::string culprit = dir + (external ? "/model.onnx.data" : "/model.onnx");
    EXPECT_NE(err.find("'" + culprit + "': no space left on device"), std::string::npos) << err;
    EXPECT_TRUE(ListDir(dir).empty());
  }
  ExpectInputUntouched();
}

TEST_F(WriteFaults, ReadOnlyOutputFolderIsExit4NamingTheFolder) {
  const std::string dir = tmp_ / "out";
  WriteBytes(dir + "/model.onnx", "previous");
  std::string why;
  if (PrivateMounts(&why) && ::mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) == 0) {
    Mounted m{dir};
    ASSERT_EQ(::mount(nullptr, dir.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr), 0)
        << std::strerror(errno);
    std::string err;
    EXPECT_EQ(RunToEnd(Args(dir, {}), &err), kExitIO) << err;
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_NE(err.find("folder '" + dir + "' is not writable: Read-only file system"), std::string::npos)
        << err;
    EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.onnx"});
    EXPECT_EQ(ReadBytes(dir + "/model.onnx"), "previous");
  } else {
    std::cout << "read-only bind mount not permitted here (" << why << "); only the permission case runs\n";
  }
  // Not root: a folder without write permission (as root, the child drops to "nobody"; the input must
  // then be readable by it).
  const bool root = ::geteuid() == 0;
  for (const std::string& d : {tmp_.path(), tmp_ / "in"}) ::chmod(d.c_str(), 0755);
  for (const char* f : {"in/big.onnx", "in/big.onnx.data"}) ::chmod((tmp_ / f).c_str(), 0644);
  ::chmod(dir.c_str(), 0555);
  SpawnOptions nobody;
  nobody.as_nobody = root;
  std::string err;
  EXPECT_EQ(RunToEnd(Args(dir, {}), &err, nobody), kExitIO) << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("folder '" + dir + "' is not writable: Permission denied"), std::string::npos) << err;
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.onnx"});
  ::chmod(dir.c_str(), 0755);
  ExpectInputUntouched();
}

// Odd output paths, on the small model (each fails before the model is read).
class OutputPaths : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteBytes(input_, SerializeModel(testing::TinyModel()));
    input_bytes_ = ReadBytes(input_);
    std::filesystem::create_directory(tmp_ / "out");
  }
  TempDir tmp_;
  const std::string input_ = tmp_ / "tiny.onnx";
  std::string input_bytes_;
};

TEST_F(OutputPaths, DirectoryIsExit4) {
  std::filesystem::create_directory(tmp_ / "out/model.onnx");
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/model.onnx"}, &err), kExitIO) << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("cannot write '" + tmp_ / "out/model.onnx" + "': it is a directory"), std::string::npos)
      << err;
  EXPECT_TRUE(ListDir(tmp_ / "out/model.onnx").empty());
  EXPECT_EQ(ListDir(tmp_ / "out"), std::vector<std::string>{"model.onnx"});
}

TEST_F(OutputPaths, SymlinkToTheInputIsRefused) {
  ASSERT_EQ(::symlink(input_.c_str(), (tmp_ / "out/model.onnx").c_str()), 0);
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, std::vector<std::string>{"--external-data"}}) {
    std::vector<std::string> args{input_, "-o", tmp_ / "out/model.onnx"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string err;
    EXPECT_EQ(RunToEnd(args, &err), kExitUsage) << err;
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_NE(err.find("refusing to overwrite the input file '" + input_ + "'"), std::string::npos) << err;
    EXPECT_EQ(ReadBytes(input_), input_bytes_);
    EXPECT_TRUE(std::filesystem::is_symlink(tmp_ / "out/model.onnx"));
    EXPECT_EQ(ListDir(tmp_ / "out"), std::vector<std::string>{"model.onnx"});
  }
  // A report through a link to the input is refused too.
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/other.onnx", "--report", tmp_ / "out/model.onnx"}, &err),
            kExitUsage)
      << err;
  EXPECT_EQ(ReadBytes(input_), input_bytes_);
}

TEST_F(OutputPaths, SymlinkElsewhereIsReplacedAndItsTargetLeftAlone) {
  WriteBytes(tmp_ / "elsewhere.onnx", "someone else's file");
  ASSERT_EQ(::symlink((tmp_ / "elsewhere.onnx").c_str(), (tmp_ / "out/model.onnx").c_str()), 0);
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/model.onnx", "-q"}, &err), 0) << err;
  EXPECT_FALSE(std::filesystem::is_symlink(tmp_ / "out/model.onnx"));
  EXPECT_EQ(ReadBytes(tmp_ / "elsewhere.onnx"), "someone else's file");
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "ref.onnx", "-q"}), 0);
  EXPECT_EQ(ReadBytes(tmp_ / "out/model.onnx"), ReadBytes(tmp_ / "ref.onnx"));
  // A dangling link is replaced the same way.
  ASSERT_EQ(::symlink((tmp_ / "nowhere").c_str(), (tmp_ / "out/dangling.onnx").c_str()), 0);
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/dangling.onnx", "-q"}, &err), 0) << err;
  EXPECT_EQ(ReadBytes(tmp_ / "out/dangling.onnx"), ReadBytes(tmp_ / "ref.onnx"));
  EXPECT_FALSE(Exists(tmp_ / "nowhere"));
}

TEST_F(OutputPaths, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo((tmp_ / "out/pipe").c_str(), 0644), 0);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{input_, "-o", tmp_ / "out/pipe"},
        std::vector<std::string>{input_, "-o", tmp_ / "out/model.onnx", "--report", tmp_ / "out/pipe"},
        std::vector<std::string>{input_, "-o", tmp_ / "out/model.onnx", "--report-md", tmp_ / "out/pipe"},
        std::vector<std::string>{input_, "-o", tmp_ / "out/model.onnx", "--external-data",
                                 "--external-data-file", "pipe"}}) {
    std::string err;
    Child c(args);
    EXPECT_EQ(c.Wait(), kExitIO) << err;  // -1 after kChildTimeoutSeconds if it blocked
    err = c.err();
    EXPECT_LT(c.seconds(), 10.0);
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_NE(err.find("cannot write '" + tmp_ / "out/pipe" + "': it is a named pipe (FIFO)"),
              std::string::npos)
        << err;
    EXPECT_EQ(ListDir(tmp_ / "out"), std::vector<std::string>{"pipe"});
    EXPECT_EQ(std::filesystem::status(tmp_ / "out/pipe").type(), std::filesystem::file_type::fifo);
  }
}

TEST_F(OutputPaths, DeviceFolderIsRefused) {
  // Renaming over /dev/stdout would replace the system's link (as root), not write to the stream.
  for (const char* path : {"/dev/stdout", "/dev/null", "/dev/shm-not-there/model.onnx"}) {
    std::string err;
    EXPECT_EQ(RunToEnd({input_, "-o", path}, &err), kExitIO) << path << ": " << err;
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_NE(err.find(std::string("cannot write '") + path + "'"), std::string::npos) << err;
  }
  EXPECT_TRUE(std::filesystem::is_symlink("/dev/stdout"));
  EXPECT_TRUE(TempFiles("/dev").empty());
}

TEST_F(OutputPaths, ParentThatIsAFileOrMissingIsExit4) {
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", input_ + "/model.onnx"}, &err), kExitIO) << err;
  EXPECT_TRUE(OneLine(err)) << err;
  EXPECT_NE(err.find("'" + input_ + "' is not a folder"), std::string::npos) << err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "missing/model.onnx"}, &err), kExitIO) << err;
  EXPECT_NE(err.find("folder '" + tmp_ / "missing" + "' does not exist"), std::string::npos) << err;
  EXPECT_EQ(RunToEnd({input_, "-o", tmp_ / "out/model.onnx", "--report", input_ + "/r.json"}, &err), kExitIO)
      << err;
  EXPECT_NE(err.find("'" + input_ + "' is not a folder"), std::string::npos) << err;
  EXPECT_EQ(ReadBytes(input_), input_bytes_);
  EXPECT_TRUE(ListDir(tmp_ / "out").empty());
}

TEST_F(OutputPaths, TwoOutputsOnTheSameFileAreRefused) {
  const std::string model = tmp_ / "out/model.onnx";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{input_, "-o", model, "--report", model},
        std::vector<std::string>{input_, "-o", model, "--report", tmp_ / "out/r", "--report-md",
                                 tmp_ / "out/./r"},
        std::vector<std::string>{input_, "-o", model, "--external-data", "--external-data-file",
                                 "model.onnx"}}) {
    std::string err;
    EXPECT_EQ(RunToEnd(args, &err), kExitUsage) << err;
    EXPECT_TRUE(OneLine(err)) << err;
    EXPECT_TRUE(ListDir(tmp_ / "out").empty()) << err;
  }
}

TEST_F(OutputPaths, StaleTemporaryFilesOfAKilledRunAreRemovedOnlyWhenOldAndUnlocked) {
  const std::string dir = tmp_ / "out";
  const auto make = [&](const std::string& name, int age_seconds) {
    WriteBytes(dir + "/" + name, "partial");
    const timeval now{::time(nullptr) - age_seconds, 0};
    const timeval times[2] = {now, now};
    ::utimes((dir + "/" + name).c_str(), times);
  };
  make(".model.onnx.tmp-AbC123", 2 * kStaleTempSeconds);  // ours, stale: removed
  make(".model.onnx.tmp-xyz789", 5);                      // ours, maybe still being written: kept
  make(".model.onnx.tmp-LoCkeD", 2 * kStaleTempSeconds);  // stale but locked by a live process: kept
  make(".model.onnx.tmp-AbC12", 2 * kStaleTempSeconds);   // not our pattern: kept
  make(".other.onnx.tmp-AbC123", 2 * kStaleTempSeconds);  // another destination's: kept
  const int fd = ::open((dir + "/.model.onnx.tmp-LoCkeD").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  std::string err;
  EXPECT_EQ(RunToEnd({input_, "-o", dir + "/model.onnx", "-q"}, &err), 0) << err;
  ::close(fd);
  EXPECT_EQ(ListDir(dir),
            (std::vector<std::string>{".model.onnx.tmp-AbC12", ".model.onnx.tmp-LoCkeD",
                                      ".model.onnx.tmp-xyz789", ".other.onnx.tmp-AbC123", "model.onnx"}));
}

}  // namespace
}  // namespace compress
