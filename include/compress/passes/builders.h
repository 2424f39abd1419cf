// Factory functions of the individual passes (one per file under src/passes), used by the pass list in
// src/passes/pass.cc. Kept out of pass.h so that adding a pass touches only its file and the list.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "compress/passes/pass.h"

namespace compress {

std::unique_ptr<Pass> MakeFoldConstantsPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeConstantToInitializerPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeFoldBatchNormPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeRemoveIdentityPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeRemoveDeadNodesPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeShareInitializersPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeFp16Pass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeCompactNamesPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeQuantizePass(const nlohmann::json& options);
std::unique_ptr<Pass> MakePrunePass(const nlohmann::json& options);
std::unique_ptr<Pass> MakePruneChannelsPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeLowRankPass(const nlohmann::json& options);
std::unique_ptr<Pass> MakeFinetunePass(const nlohmann::json& options);

}  // namespace compress
