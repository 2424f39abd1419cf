#include "compress/cli/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace compress {

void InitLogging(int verbosity) {
  auto logger = spdlog::get("compress");
  if (!logger) logger = spdlog::stderr_color_mt("compress");
  logger->set_pattern("compress: %^%l%$: %v");
  if (verbosity < 0) logger->set_level(spdlog::level::err);
  else if (verbosity == 0) logger->set_level(spdlog::level::info);
  else logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
}

}  // namespace compress
