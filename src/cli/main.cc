#include <iostream>

#include "compress/cli/app.h"

int main(int argc, char** argv) {
  return compress::RunCli(std::vector<std::string>(argv + 1, argv + argc), std::cout);
}
