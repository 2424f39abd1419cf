#include "compress/util/format.h"

#include <iomanip>
#include <locale>
#include <sstream>

namespace compress {

std::string FormatFixed(double value, int digits) {
  std::ostringstream os;
  os.imbue(std::locale::classic());
  os << std::fixed << std::setprecision(digits) << value;
  return os.str();
}

std::string FormatThousands(int64_t value) {
  // Through uint64_t: the magnitude of INT64_MIN does not fit int64_t.
  const uint64_t magnitude = value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  std::string s = std::to_string(magnitude);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return value < 0 ? "-" + s : s;
}

}  // namespace compress
