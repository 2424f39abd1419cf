#include <iostream>

#include "compress/cli/app.h"
#include "compress/util/fs.h"

int main(int argc, char** argv) {
  // First, before any thread starts: an interrupted run removes its temporary files.
  compress::InstallSignalCleanup();
  return compress::RunCli(std::vector<std::string>(argv + 1, argv + argc), std::cout);
}
