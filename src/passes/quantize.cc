#include "compress/passes/builders.h"
#include "compress/util/error.h"

namespace compress {

std::unique_ptr<Pass> MakeQuantizePass(const nlohmann::json& /*options*/) {
  ThrowInternal("pass 'quantize' is not implemented yet");
}

}  // namespace compress
