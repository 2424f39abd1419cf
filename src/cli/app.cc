#include "compress/cli/app.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <new>

#include "compress/cli/log.h"
#include "compress/io/onnx_io.h"
#include "compress/report/inspect.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "compress/version.h"

namespace compress {

namespace {

struct GlobalOptions {
  bool quiet = false;
  int verbose = 0;
};

struct MainOptions {
  std::string model;
  std::string output;
  bool external_data = false;
  size_t external_threshold = 1024;
  std::string external_file;
  bool overwrite = false;
};

struct InspectOptions {
  std::string model;
  bool json = false;
};

std::string StemOf(const std::string& path) {
  std::string base = BaseName(path);
  const auto dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

std::string DefaultOutput(const std::string& input, const std::string& recipe) {
  const std::string dir = DirName(input);
  return (dir == "." ? std::string() : dir + "/") + StemOf(input) + "." + recipe + ".onnx";
}

int RunMain(const MainOptions& opt, std::ostream& out) {
  LoadInfo info;
  spdlog::debug("loading {}", opt.model);
  Model model = LoadModel(opt.model, {}, &info);
  spdlog::debug("{}: {} nodes, {} initializers", opt.model, model.graph.nodes.size(),
                model.graph.initializers.size());

  const std::string output = opt.output.empty() ? DefaultOutput(opt.model, "rewritten") : opt.output;
  SaveOptions save;
  save.external_data = opt.external_data ? SaveOptions::ExternalData::kAlways : SaveOptions::ExternalData::kAuto;
  save.external_threshold = opt.external_threshold;
  save.external_file = opt.external_file;
  save.allow_overwrite = opt.overwrite;
  save.protected_paths = info.external_files;
  save.protected_paths.push_back(opt.model);
  const SaveResult saved = SaveModel(model, output, save);

  const CheckResult check = CheckModelFile(output);
  if (!check.ok) spdlog::warn("{}: the ONNX checker rejects the output: {}", output, check.message);
  out << "wrote " << output << " (" << saved.model_bytes << " bytes";
  if (!saved.external_path.empty()) out << " + " << saved.external_bytes << " bytes in " << saved.external_path;
  out << "; input " << info.file_bytes << " bytes); ONNX checker: " << (check.ok ? "passes" : "fails") << "\n";
  return 0;
}

int RunInspect(const InspectOptions& opt, std::ostream& out) {
  const Model model = LoadModel(opt.model);
  const nlohmann::json doc = InspectModel(model, opt.model);
  if (opt.json) out << doc.dump(2) << "\n";
  else out << FormatInspection(doc);
  return 0;
}

int Dispatch(const std::vector<std::string>& args, std::ostream& out) {
  CLI::App app{"compress: shrink ONNX models (quantization, pruning, low rank, distillation) and report the cost",
               "compress"};
  app.set_version_flag("--version", std::string("compress ") + COMPRESS_VERSION);
  app.require_subcommand(0, 1);
  GlobalOptions global;
  app.add_flag("-q,--quiet", global.quiet, "Only print errors on stderr");
  app.add_flag("-v,--verbose", global.verbose, "More detail on stderr (debug messages)");

  MainOptions main_opt;
  app.add_option("model", main_opt.model, "Input ONNX model");
  app.add_option("-o,--output", main_opt.output,
                 "Output model (default: <stem>.<recipe>.onnx next to the input)");
  app.add_flag("--external-data", main_opt.external_data,
               "Store weights of at least --external-data-threshold bytes in a side file <output>.data "
               "(always done when the model would exceed 2 GiB)");
  app.add_option("--external-data-threshold", main_opt.external_threshold,
                 "Smallest tensor, in bytes, moved to external data")
      ->capture_default_str();
  app.add_option("--external-data-file", main_opt.external_file,
                 "Name of the external data file, in the output's folder (default <output file>.data)");
  app.add_flag("--overwrite", main_opt.overwrite, "Allow the output to replace the input file");

  InspectOptions inspect_opt;
  CLI::App* inspect = app.add_subcommand("inspect", "Describe a model: opsets, inputs, ops, parameters, sizes");
  inspect->fallthrough();
  inspect->add_option("model", inspect_opt.model, "ONNX model")->required();
  inspect->add_flag("--json", inspect_opt.json, "Print JSON (schema compress.inspect/1) instead of text");

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    out << e.what() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    InitLogging(0);
    spdlog::error("{} (run 'compress --help' for usage)", e.what());
    return static_cast<int>(ErrorKind::kUsage);
  }
  InitLogging(global.quiet ? -1 : global.verbose);

  if (inspect->parsed()) return RunInspect(inspect_opt, out);
  if (main_opt.model.empty()) {
    spdlog::error("no input model given (run 'compress --help' for usage)");
    return static_cast<int>(ErrorKind::kUsage);
  }
  return RunMain(main_opt, out);
}

}  // namespace

int RunCli(const std::vector<std::string>& args, std::ostream& out) {
  try {
    return Dispatch(args, out);
  } catch (const Error& e) {
    InitLogging(0);
    spdlog::error("{}", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    InitLogging(0);
    spdlog::error("out of memory");
    return static_cast<int>(ErrorKind::kInternal);
  } catch (const std::exception& e) {
    InitLogging(0);
    spdlog::error("internal error: {}", e.what());
    return static_cast<int>(ErrorKind::kInternal);
  }
}

}  // namespace compress
