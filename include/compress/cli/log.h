// Logging setup: everything goes to stderr through spdlog, results alone go to stdout.
#pragma once

namespace compress {

// verbosity < 0: errors only (-q); 0: info; > 0: debug (-v).
void InitLogging(int verbosity);

}  // namespace compress
