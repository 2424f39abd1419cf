// The table `compress sensitivity` prints from RunSensitivity's document (compress/job/sensitivity.h).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace compress {

std::string FormatSensitivity(const nlohmann::json& doc);

}  // namespace compress
