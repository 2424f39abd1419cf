// Numbers as the tables and messages print them: fixed decimals (C locale) and thousands separators.
#pragma once

#include <cstdint>
#include <string>

namespace compress {

// "3.14" for (3.14159, 2).
std::string FormatFixed(double value, int digits);
// "1,234,567"; "-1,234" for negatives.
std::string FormatThousands(int64_t value);

}  // namespace compress
