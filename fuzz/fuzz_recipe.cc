// fuzz_recipe_json / fuzz_recipe_yaml: recipe files through LoadRecipeFile (parsing, validation of
// every pass and option) and the expanded, serialized recipe. FUZZ_RECIPE_EXT picks the file type.
#include <cstddef>
#include <cstdint>
#include <string>

#include "compress/pipeline/recipe.h"
#include "compress/util/error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (size_t{64} << 10)) return -1;
  const std::string path = fuzz::WriteScratch(std::string("recipe.") + FUZZ_RECIPE_EXT, data, size);
  try {
    const compress::Recipe recipe = compress::LoadRecipeFile(path);
    (void)recipe.ExpandedSteps();
    (void)recipe.ToJson().dump();
  } catch (const compress::Error&) {
  }
  return 0;
}
