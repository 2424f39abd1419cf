// The `compress` command line. main() only forwards to RunCli so that everything is testable.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace compress {

// Parses `args` (without the program name), runs the command and returns the process exit code
// (see ErrorKind). Results go to `out`; logs and errors go to stderr.
int RunCli(const std::vector<std::string>& args, std::ostream& out);

}  // namespace compress
