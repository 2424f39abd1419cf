// fp16: float32 weights and computation become float16, with Cast nodes wherever a value crosses between
// the two precisions.
//
//   Before:  x:f32 -> Conv(W:f32) -> Relu -> Resize(roi, scales:f32) -> Gemm(B:f32) -> y:f32
//   After:   x:f32 -> Cast -> Conv(W:f16) -> Relu -> Cast -> Resize -> Cast -> Gemm(B:f16) -> y_fp16
//            -> Cast -> y:f32          (Resize is blocked and stays float32; y keeps its name and type)
//
// Which inputs and outputs of a node change together comes from the operator schema: every type
// parameter that allows float16 and is bound to float32 values switches as a whole, so the node stays
// well typed. Inputs of a fixed type (Resize `scales` is tensor(float)) or of a parameter that has no
// float16 keep float32. Initializers and Constant nodes are not cast at run time: they are stored in the
// precision their readers want (both, under two names, when readers disagree).
//
// The bodies of If, Loop and Scan are converted the same way, each by a converter of its own. Everything
// crossing a body's boundary stays float32: body inputs and outputs (so If/Loop/Scan outputs keep their
// types), and values captured from an enclosing scope are read under the name of the precision the body
// wants, which the enclosing scope provides (a constant is stored in that precision, a computed value
// gets a Cast next to its producer).
//
//   Before:  W:f32 (outer initializer) ; If(then: x -> Conv(W) -> y)
//   After:   W:f16                      ; If(then: x -> Cast -> Conv(W) -> y_fp16 -> Cast -> y)
//
// LSTM, GRU and RNN stay float32 by default (ONNX Runtime has no float16 CPU kernel for them); their
// weights W, R and B are still stored in float16, behind a Cast to float32 that runtimes fold at load time.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "compress/calib/calibration.h"
#include "compress/io/schema.h"
#include "compress/ir/verify.h"
#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "compress/util/half.h"
#include "pass_util.h"

namespace compress {

namespace {

using nlohmann::json;

// Largest finite float16. Finite float32 values beyond it would become infinities; they are clamped
// instead. Infinities and NaN exist in float16 and keep their meaning (e.g. -inf attention masks).
constexpr float kHalfMax = 65504.0f;

// Cast with a numeric `to` attribute appears in opset 6 (Cast-1 takes a type name string).
constexpr int64_t kMinOpset = 6;

enum class Prec { kF32 = 0, kF16 = 1 };

Prec Other(Prec p) { return p == Prec::kF16 ? Prec::kF32 : Prec::kF16; }
const char* Suffix(Prec p) { return p == Prec::kF16 ? "_fp16" : "_fp32"; }
DType ToDType(Prec p) { return p == Prec::kF16 ? DType::kFloat16 : DType::kFloat; }

// Op types kept in float32 unless default_block_ops is false.
//
// Not on the list: Softmax, LayerNormalization, BatchNormalization and the reductions. On the sample models
// (ViT with LayerNormalization and Softmax; attention_op9 with LayerNorm spelled out as ReduceMean, Pow,
// Sqrt and Div) converting them moves top-1 in ONNX Runtime by at most 0.03 points, well inside the 0.1
// point budget (tests/model/fp16_model_test.cc), and LayerNormalization keeps its statistics in float32
// by definition (stash_type).
const std::set<std::string>& DefaultBlockOps() {
  static const std::set<std::string> ops = {
      // The ops down to Upsample are onnxconverter-common's default list, so that both tools leave the same
      // ops alone; where there is a numerical reason as well, it is given. The ai.onnx.ml operators accept
      // float and double only.
      "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer",
      "FeatureVectorizer", "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer",
      "OneHotEncoder", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
      "TreeEnsembleRegressor", "ZipMap",
      // Selection by score: nearby scores round to the same float16 value, which changes the elements TopK
      // and NonMaxSuppression pick.
      "NonMaxSuppression", "TopK",
      // Coordinates: above 2048 float16 has no fractional bits, so RoiAlign boxes and Resize regions of
      // interest on large images lose their sub-pixel position.
      "RoiAlign", "Resize", "Upsample",
      // Range counts in steps and CumSum accumulates: float16 stops representing integers above 2048,
      // so both drift from float32 far more than a single rounding.
      "Range", "CumSum",
      // Min and Max select and do not round; they are here only for parity with onnxconverter-common.
      "Min", "Max",
      // Random generators (RandomUniformLike is on onnxconverter-common's list, the others are added):
      // float16 samples round onto a coarse grid (a uniform sample can round up to `high`, outside
      // [low, high)), so the distribution is not the one the model asks for.
      "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal", "Multinomial", "Bernoulli",
      // Recurrent ops: ONNX Runtime's CPU provider implements LSTM, GRU and RNN for float32 only, so a float16
      // one does not load there. Their weights are stored in float16 all the same (see IsRecurrentWeight).
      "LSTM", "GRU", "RNN"};
  return ops;
}

// Ops whose output element type is set by an attribute this pass does not rewrite: always float32.
bool IsAttributeTyped(const std::string& op) {
  static const std::set<std::string> ops = {
      "EyeLike",   "RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Multinomial",
      "Bernoulli", "HammingWindow", "HannWindow",   "BlackmanWindow",    "MelWeightMatrix"};
  return ops.count(op) != 0;
}

// Ops whose ONNX function body mixes in float32 constants (MeanVarianceNormalization adds a float32
// epsilon), so the operator is not well typed in float16 however the runtime implements it.
bool HasFloat32OnlyBody(const std::string& op) { return op == "MeanVarianceNormalization"; }

// Ops that only move or select elements. They follow their inputs: when every non-constant input arrives in
// float32 they stay float32, so a Reshape between two float32 nodes gets no pair of Casts and no rounding.
bool IsDataMovement(const std::string& op) {
  static const std::set<std::string> ops = {
      "Identity",     "Reshape",      "Flatten", "Squeeze",        "Unsqueeze", "Transpose", "Concat",
      "Split",        "Slice",        "Gather",  "GatherElements", "GatherND",  "Expand",    "Tile",
      "DepthToSpace", "SpaceToDepth", "Pad",     "Where"};
  return ops.count(op) != 0;
}

// Ops whose result does not depend on the element values: they read their input in either precision.
bool IsValueBlind(const std::string& op) { return op == "Shape" || op == "Size"; }

bool HasSubgraph(const Node& n) {
  for (const auto& a : n.attributes) {
    if (!a.graphs.empty()) return true;
  }
  return false;
}

// Control flow whose bodies this pass converts (their outputs and body boundaries stay float32).
bool IsControlFlow(const Node& n) {
  return n.IsDefaultDomain() && (n.op_type == "If" || n.op_type == "Loop" || n.op_type == "Scan");
}

// W, R and B of a recurrent op (inputs 1 to 3): weights whose float16 copy a Cast to float32 can feed
// when the op itself stays float32.
bool IsRecurrentWeight(const Node& n, size_t input) {
  return n.IsDefaultDomain() && (n.op_type == "LSTM" || n.op_type == "GRU" || n.op_type == "RNN") && input >= 1 &&
         input <= 3;
}

std::vector<std::string> StringList(const json& v) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v) out.push_back(e.get<std::string>());
  }
  return out;
}

// float32 tensor -> float16 with out-of-range finite values clamped; `clamped` counts them.
Tensor ToHalf(const Tensor& t, int64_t* clamped) {
  Tensor out(DType::kFloat16, t.dims(), t.name());
  out.set_doc_string(t.doc_string());
  const float* src = t.data<float>();
  auto* dst = static_cast<uint16_t*>(out.mutable_raw());
  for (int64_t i = 0; i < t.numel(); ++i) {
    float x = src[i];
    if (std::isfinite(x) && std::fabs(x) > kHalfMax) {
      x = std::copysign(kHalfMax, x);
      ++*clamped;
    }
    dst[i] = FloatToHalf(x);
  }
  t.ReleasePages();  // a weight mapped from a file is read once: do not keep it resident
  return out;
}

struct ValueType {
  TypeInfo::Kind kind = TypeInfo::Kind::kNone;
  DType elem = DType::kUndefined;
};

// What the pass knows and decides about one float32 value of the main graph.
struct ValueState {
  // kOuter: a float32 value of an enclosing scope read in this (sub)graph; stored in whichever precision
  // the readers here want, under the names the enclosing scope gives it.
  enum class Source { kGraphInput, kInitializer, kSparseInitializer, kConstantNode, kNode, kOuter };
  Source source = Source::kNode;
  size_t node = 0;         // producer, for kConstantNode and kNode
  bool flex = false;       // a constant: stored in whichever precision its readers want
  Prec home = Prec::kF32;  // the precision the producer writes (for constants: the one keeping the name)
  bool need[2] = {false, false};
  bool need_any = false;    // read by an op indifferent to precision (Shape, Size)
  bool weight_f32 = false;  // read as float32 by a recurrent op's weight input (only; see IsRecurrentWeight)
  bool graph_output = false;
  Prec output_prec = Prec::kF32;
  std::string names[2];  // the name holding the value in each precision; "" when not made
};

// What a node input needs: nothing (not a float32 value), float32, float16, or either (Shape, Size).
enum class Req { kNone, kF32, kF16, kAny };

struct NodePlan {
  bool touches = false;      // reads or writes float32 tensors (or values of unknown type)
  bool control_flow = false;  // If/Loop/Scan whose bodies are converted; the node itself stays float32
  std::string block_reason;  // non-empty: kept in float32
  bool converted = false;    // computes in float16
  std::vector<Req> in;       // per input
  std::vector<bool> out16;   // per output: written in float16 now
};

struct Fp16Options {
  bool keep_io_types = true;
  std::set<std::string> block_ops;
  std::set<std::string> block_nodes;
};

// What all converters of one model (main graph and bodies) share: value names are unique across the model,
// so one type table serves every graph.
struct Shared {
  explicit Shared(const Graph& root) : names(root) {}
  passes::NameGenerator names;
  std::map<std::string, ValueType> types;
  std::map<std::string, OpSignature> sigs;
  std::unordered_set<std::string> int_derived;  // float32 values computed from integers
  int64_t converted_initializers = 0, converted_nodes = 0, casts = 0, blocked_nodes = 0, clamped = 0,
          subgraphs = 0, weight_casts = 0;
  std::map<std::string, int64_t> blocked_by_reason;
};

class Converter {
 public:
  Converter(Model& model, PassContext& ctx, const Fp16Options& options)
      : model_(model),
        g_(model.graph),
        ctx_(ctx),
        opt_(options),
        opset_(model.OpsetVersion("")),
        owned_(std::make_unique<Shared>(model.graph)),
        sh_(*owned_),
        outer_(nullptr),
        io_f32_(options.keep_io_types) {}

  // The converter of a body of an If/Loop/Scan node of `outer`'s graph.
  Converter(Converter& outer, Graph& body)
      : model_(outer.model_),
        g_(body),
        ctx_(outer.ctx_),
        opt_(outer.opt_),
        opset_(outer.opset_),
        sh_(outer.sh_),
        outer_(&outer),
        io_f32_(true) {}

  void Run() {
    if (opset_ == 0) {
      ctx_.Note("fp16: the model imports no default ONNX opset, so no Cast can be inserted; left unchanged");
      CountAll();
      return;
    }
    if (opset_ < kMinOpset) {
      ctx_.Note("fp16: opset " + std::to_string(opset_) +
                " has no Cast with a numeric target type (needs opset 6); left unchanged");
      CountAll();
      return;
    }
    CollectTypes();
    if (ctx_.calibration() != nullptr) FindOverflowingValues();
    PlanAndRequire();
    ResolveAndRewrite();
    CountAll();
  }

 private:
  // Plans this graph, and (from PlanNode) every body below it, then records what each value must be
  // available as; requirements on values of enclosing scopes are passed up.
  void PlanAndRequire() {
    order_ = TopologicalOrder(g_);
    Plan();
    Require();
  }

  // Top-down: the names in this graph are fixed first, then each body picks the outer names it reads.
  // Bodies are rewritten before this graph, whose rewrite moves the nodes holding them.
  void ResolveAndRewrite() {
    Resolve();
    for (auto& body : bodies_) body->ResolveAndRewrite();
    Rewrite();
  }

  // Called by a body: it reads outer value `name` in precision `p`.
  void NeedFromBody(const std::string& name, Prec p) {
    ValueState* s = State(name);
    if (s == nullptr) ThrowInternal("fp16: body reads '" + name + "', which its enclosing graph does not track");
    s->need[static_cast<int>(p)] = true;
  }

  // Called by a body: it reads outer value `name` in whichever precision it has.
  void NeedAnyFromBody(const std::string& name) {
    ValueState* s = State(name);
    if (s == nullptr) ThrowInternal("fp16: body reads '" + name + "', which its enclosing graph does not track");
    s->need_any = true;
  }

  // Called by a body after this graph is resolved: the precision outer value `name` is held in.
  Prec HomeForBody(const std::string& name) {
    const ValueState* s = State(name);
    if (s == nullptr) ThrowInternal("fp16: no state for '" + name + "' in the enclosing graph");
    return s->home;
  }

  // Called by a body after this graph is resolved: the name holding outer value `name` in precision `p`.
  std::string NameForBody(const std::string& name, Prec p) {
    const ValueState* s = State(name);
    if (s == nullptr || s->names[static_cast<int>(p)].empty()) {
      ThrowInternal("fp16: no " + std::string(p == Prec::kF16 ? "float16" : "float32") + " name for '" + name +
                    "' in the enclosing graph");
    }
    return s->names[static_cast<int>(p)];
  }

  // ---- names ----------------------------------------------------------------------------------------

  // `base`, or `base_1`, `base_2`, ... : the first name no graph of the model uses yet.
  std::string Fresh(const std::string& base) { return sh_.names.Make(base); }

  // ---- types ----------------------------------------------------------------------------------------

  const OpSignature& Sig(const std::string& op_type) {
    auto it = sh_.sigs.find(op_type);
    if (it == sh_.sigs.end()) it = sh_.sigs.emplace(op_type, LookupSignature("", op_type, opset_)).first;
    return it->second;
  }

  // Types of the values of every graph of the model. Sibling bodies may reuse a name; a name declared with
  // two different types is left untyped (its readers stay float32).
  void CollectTypes() {
    Model typed = model_;  // tensors share their buffers, so the copy is cheap
    InferShapes(typed);
    std::set<std::string> conflicting;
    auto set = [&](const std::string& name, ValueType t, bool overwrite) {
      auto it = sh_.types.find(name);
      if (it == sh_.types.end()) {
        sh_.types[name] = t;
      } else if (overwrite) {
        it->second = t;
      }
    };
    auto add = [&](const ValueInfo& v) {
      if (v.type.kind != TypeInfo::Kind::kNone) set(v.name, {v.type.kind, v.type.elem_type}, false);
    };
    for (const Graph* root : {&g_, &typed.graph}) {
      ForEachGraph(*root, [&](const Graph& g) {
        for (const auto& v : g.inputs) add(v);
        for (const auto& v : g.outputs) add(v);
        for (const auto& v : g.value_info) add(v);
      });
    }
    // What the data says wins over any declaration.
    std::map<std::string, DType> data_types;
    ForEachGraph(g_, [&](const Graph& g) {
      auto record = [&](const std::string& name, DType t) {
        const auto [it, inserted] = data_types.emplace(name, t);
        if (!inserted && it->second != t) conflicting.insert(name);
        set(name, {TypeInfo::Kind::kTensor, t}, true);
      };
      for (const auto& t : g.initializers) record(t.name(), t.dtype());
      for (const auto& s : g.sparse_initializers) record(s.values.name(), s.values.dtype());
      for (const auto& n : g.nodes) {
        if (n.op_type != "Constant" || !n.IsDefaultDomain() || n.outputs.empty()) continue;
        const DType t = ConstantDType(n);
        if (t != DType::kUndefined) record(n.outputs[0], t);
      }
    });
    for (const auto& name : conflicting) sh_.types.erase(name);
    ForEachGraph(g_, [this](const Graph& g) { PropagateTypes(g); });
  }

  // With calibration data: the computed float32 values whose magnitude exceeds float16's range on that
  // data (power spectra, unnormalised sums). Their producers stay float32 (BlockReason), where float16
  // would give infinities and then NaN.
  void FindOverflowingValues() {
    std::vector<std::string> names;
    for (const auto& n : g_.nodes) {
      if (n.op_type == "Constant") continue;
      for (const auto& o : n.outputs) {
        const auto it = sh_.types.find(o);
        if (!o.empty() && it != sh_.types.end() && it->second.kind == TypeInfo::Kind::kTensor &&
            it->second.elem == DType::kFloat) {
          names.push_back(o);
        }
      }
    }
    if (names.empty()) return;
    const CalibrationTable& table = ctx_.calibration()->Get(model_, names);
    for (const auto& name : names) {
      const auto it = table.tensors.find(name);
      if (it == table.tensors.end()) continue;
      const double peak = std::max(std::abs(it->second.min), std::abs(it->second.max));
      if (peak > kHalfMax) overflow_.insert(name);
    }
  }

  static DType ConstantDType(const Node& n) {
    for (const auto& a : n.attributes) {
      if (a.name == "value" && !a.tensors.empty()) return a.tensors[0].dtype();
      if (a.name == "sparse_value" && !a.sparse_tensors.empty()) return a.sparse_tensors[0].values.dtype();
      if (a.name == "value_float" || a.name == "value_floats") return DType::kFloat;
      if (a.name == "value_int" || a.name == "value_ints") return DType::kInt64;
      if (a.name == "value_string" || a.name == "value_strings") return DType::kString;
    }
    return DType::kUndefined;
  }

  // Where shape inference left an output untyped, the schema often still says its element type: a fixed
  // type, the type of an input bound to the same type parameter, or Cast's `to`.
  void PropagateTypes(const Graph& graph) {
    for (size_t idx : TopologicalOrder(graph)) {
      const Node& n = graph.nodes[idx];
      if (!n.IsDefaultDomain()) continue;
      for (size_t k = 0; k < n.outputs.size(); ++k) {
        const std::string& out = n.outputs[k];
        if (out.empty() || sh_.types.count(out)) continue;
        if (n.op_type == "Cast") {
          const Attribute* to = n.FindAttr("to");
          if (to != nullptr && to->type == AttrType::kInt && IsKnownDType(static_cast<int32_t>(to->i))) {
            sh_.types[out] = {TypeInfo::Kind::kTensor, static_cast<DType>(to->i)};
          }
          continue;
        }
        const OpSignature& sig = Sig(n.op_type);
        if (!sig.found) continue;
        const std::string ts = sig.OutputTypeStr(k);
        const auto allowed = sig.allowed.find(ts);
        if (ts.rfind("tensor(", 0) == 0 && allowed != sig.allowed.end() && allowed->second.size() == 1) {
          sh_.types[out] = {TypeInfo::Kind::kTensor, allowed->second[0]};
          continue;
        }
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          if (n.inputs[i].empty() || sig.InputTypeStr(i) != ts) continue;
          const ValueType* t = TypeOf(n.inputs[i]);
          if (t != nullptr && t->kind == TypeInfo::Kind::kTensor) {
            sh_.types[out] = *t;
            break;
          }
        }
      }
    }
  }

  const ValueType* TypeOf(const std::string& name) const {
    const auto it = sh_.types.find(name);
    return it == sh_.types.end() ? nullptr : &it->second;
  }

  bool IsFloat32(const std::string& name) const {
    const ValueType* t = TypeOf(name);
    return t != nullptr && t->kind == TypeInfo::Kind::kTensor && t->elem == DType::kFloat;
  }

  // ---- planning -------------------------------------------------------------------------------------

  ValueState* State(const std::string& name) {
    const auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }

  ValueState& AddValue(const std::string& name, ValueState state) {
    value_order_.push_back(name);
    return values_[name] = std::move(state);
  }

  // Why `n` must stay float32, or "" when it may be converted.
  std::string BlockReason(const Node& n, const std::string& untyped, const std::string& non_tensor) {
    if (opt_.block_nodes.count(n.name)) return "listed in block_nodes";
    if (!n.IsDefaultDomain()) return "domain '" + n.domain + "' is not converted";
    if (opt_.block_ops.count(n.op_type)) return "op type is blocked";
    for (const auto& o : n.outputs) {
      if (overflow_.count(o)) return "its output exceeds float16's range (65504) on the calibration data";
    }
    if (HasSubgraph(n) && !(IsControlFlow(n) && model_.ir_version >= 4)) {
      // Before IR version 4 a body cannot hold the new initializers a conversion may need.
      return "has subgraphs, which stay float32";
    }
    if (IsAttributeTyped(n.op_type)) return "output type is set by an attribute";
    if (HasFloat32OnlyBody(n.op_type)) return "its ONNX function body is float32 only";
    if (!untyped.empty()) return "type of '" + untyped + "' is unknown";
    // A sequence, map or optional binds its element type in a type parameter of its own, which the
    // tensor-level switching here cannot keep consistent with the tensors around it.
    if (!non_tensor.empty()) return "'" + non_tensor + "' is not a tensor";
    const OpSignature& sig = Sig(n.op_type);
    if (!sig.found) return "no schema at opset " + std::to_string(opset_);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (!n.inputs[i].empty() && sig.InputTypeStr(i).empty()) return "more inputs than its schema declares";
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      if (!n.outputs[k].empty() && sig.OutputTypeStr(k).empty())
        return "more outputs than its schema declares";
    }
    return {};
  }

  void Plan() {
    for (const auto* v : g_.RealInputs()) {
      if (!IsFloat32(v->name)) continue;
      ValueState s;
      s.source = ValueState::Source::kGraphInput;
      s.home = io_f32_ ? Prec::kF32 : Prec::kF16;
      AddValue(v->name, s);
    }
    if (outer_ != nullptr) {
      for (const auto& v : g_.inputs) local_.insert(v.name);
      for (const auto& t : g_.initializers) local_.insert(t.name());
      for (const auto& sp : g_.sparse_initializers) local_.insert(sp.values.name());
      for (const auto& n : g_.nodes) local_.insert(n.outputs.begin(), n.outputs.end());
    }
    for (const auto& t : g_.initializers) {
      if (t.dtype() != DType::kFloat) continue;
      ValueState s;
      s.source = ValueState::Source::kInitializer;
      s.flex = true;
      AddValue(t.name(), s);
    }
    for (const auto& sp : g_.sparse_initializers) {
      if (sp.values.dtype() != DType::kFloat) continue;
      ValueState s;
      s.source = ValueState::Source::kSparseInitializer;
      AddValue(sp.values.name(), s);
    }
    plans_.resize(g_.nodes.size());
    for (size_t idx : order_) PlanNode(idx);
  }

  // In a body: a float32 value of an enclosing scope read here (or by a body below) gets a kOuter state.
  void TrackOuter(const std::string& name) {
    if (outer_ == nullptr || name.empty() || local_.count(name) || State(name) != nullptr) return;
    if (!IsFloat32(name) || outer_->State(name) == nullptr) return;
    ValueState s;
    s.source = ValueState::Source::kOuter;
    s.flex = true;
    AddValue(name, s);
  }

  void PlanNode(size_t idx) {
    Node& n = g_.nodes[idx];
    NodePlan& p = plans_[idx];
    p.in.assign(n.inputs.size(), Req::kNone);
    p.out16.assign(n.outputs.size(), false);
    for (const auto& s : n.inputs) TrackOuter(s);
    if (HasSubgraph(n)) {
      for (const auto& s : OuterScopeInputs(n)) TrackOuter(s);
    }
    std::string untyped, non_tensor;
    auto look = [&](const std::string& name) {
      if (name.empty()) return;
      const ValueType* t = TypeOf(name);
      if (t == nullptr) {
        if (untyped.empty()) untyped = name;
        p.touches = true;
      } else if (t->kind != TypeInfo::Kind::kTensor) {
        if (non_tensor.empty()) non_tensor = name;
      } else if (t->elem == DType::kFloat) {
        p.touches = true;
      }
    };
    for (const auto& s : n.inputs) look(s);
    for (const auto& s : n.outputs) look(s);
    if (HasSubgraph(n)) {
      for (const auto& s : OuterScopeInputs(n)) {
        if (State(s) != nullptr) p.touches = true;
      }
    }
    if (!p.touches) return;
    p.block_reason = BlockReason(n, untyped, non_tensor);

    if (p.block_reason.empty() && n.op_type == "Constant") {
      if (IsFloat32(n.outputs[0])) {
        ValueState s;
        s.source = ValueState::Source::kConstantNode;
        s.node = idx;
        s.flex = true;
        AddValue(n.outputs[0], s);
      }
      return;
    }
    if (FromIntegers(n)) {
      for (const auto& out : n.outputs) {
        if (!out.empty() && IsFloat32(out)) sh_.int_derived.insert(out);
      }
      if (p.block_reason.empty()) p.block_reason = "computes from integers (shape arithmetic)";
    }
    if (p.block_reason.empty() && IsControlFlow(n)) {
      p.control_flow = true;
      for (auto& a : n.attributes) {
        for (auto& body : a.graphs) {
          bodies_.push_back(std::make_unique<Converter>(*this, body));
          bodies_.back()->PlanAndRequire();
          ++sh_.subgraphs;
        }
      }
    } else if (p.block_reason.empty()) {
      Switch(n, p);
    }
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (p.in[i] == Req::kNone && !n.inputs[i].empty() && IsFloat32(n.inputs[i])) p.in[i] = Req::kF32;
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      if (n.outputs[k].empty() || !IsFloat32(n.outputs[k])) continue;
      ValueState s;
      s.source = ValueState::Source::kNode;
      s.node = idx;
      s.home = p.out16[k] ? Prec::kF16 : Prec::kF32;
      AddValue(n.outputs[k], s);
    }
  }

  // True when the float32 values `n` reads come from integers (a Cast from an integer or bool type, or
  // arithmetic on such values), apart from constants. That is shape and index arithmetic (sizes, scales,
  // positions, masks): float16 holds integers exactly only up to 2048, so a dimension of 2049 or a
  // position of 4097 would change value. Such chains stay float32.
  bool FromIntegers(const Node& n) const {
    bool from_ints = false;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const std::string& in = n.inputs[i];
      if (in.empty()) continue;
      if (IsFloat32(in)) {
        if (sh_.int_derived.count(in)) {
          from_ints = true;
          continue;
        }
        const auto it = values_.find(in);
        if (it == values_.end() || !it->second.flex) return false;  // computed float data
      } else if (i == 0 && (n.op_type == "Cast" || n.op_type == "CastLike") && n.IsDefaultDomain()) {
        const ValueType* t = TypeOf(in);
        if (t != nullptr && t->kind == TypeInfo::Kind::kTensor && t->elem != DType::kUndefined &&
            t->elem != DType::kString && !IsFloatingPoint(t->elem)) {
          from_ints = true;
        }
      }
    }
    return from_ints;
  }

  // A Cast between float32 and float16 already marks a precision boundary (e.g. from an earlier run of
  // this pass); switching its float32 side would only add a second Cast next to it.
  bool IsPrecisionBoundary(const Node& n) const {
    auto is_half = [this](const std::string& name) {
      const ValueType* t = TypeOf(name);
      return t != nullptr && t->kind == TypeInfo::Kind::kTensor && t->elem == DType::kFloat16;
    };
    if (n.op_type == "Cast" && !n.inputs.empty()) {
      return is_half(n.inputs[0]) || n.AttrInt("to", 0) == static_cast<int64_t>(DType::kFloat16);
    }
    if (n.op_type == "CastLike" && n.inputs.size() == 2) return is_half(n.inputs[0]) || is_half(n.inputs[1]);
    return false;
  }

  // Switches every type parameter of `n` that allows float16 and binds only float32 values.
  void Switch(const Node& n, NodePlan& p) {
    if (IsPrecisionBoundary(n)) return;
    const OpSignature& sig = Sig(n.op_type);
    // (is output, index) per type string; std::map keeps the decision order fixed.
    std::map<std::string, std::vector<std::pair<bool, size_t>>> params;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (!n.inputs[i].empty()) params[sig.InputTypeStr(i)].push_back({false, i});
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      if (!n.outputs[k].empty()) params[sig.OutputTypeStr(k)].push_back({true, k});
    }
    for (const auto& [ts, slots] : params) {
      if (!sig.Allows(ts, DType::kFloat16)) continue;
      bool all_f32 = true;
      for (const auto& [is_out, i] : slots)
        all_f32 = all_f32 && IsFloat32(is_out ? n.outputs[i] : n.inputs[i]);
      if (!all_f32) continue;
      for (const auto& [is_out, i] : slots) {
        if (is_out) {
          p.out16[i] = true;
        } else {
          p.in[i] = Req::kF16;
        }
      }
    }
    if (IsValueBlind(n.op_type)) {
      for (auto& r : p.in) {
        if (r == Req::kF16) r = Req::kAny;
      }
    }
    if (IsDataMovement(n.op_type)) {
      bool any_computed = false, all_f32 = true;
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (p.in[i] != Req::kF16) continue;
        const ValueState* s = State(n.inputs[i]);
        if (s != nullptr && s->flex) continue;
        any_computed = true;
        if (s != nullptr && s->home == Prec::kF16) all_f32 = false;
      }
      if (any_computed && all_f32) {
        for (auto& r : p.in) {
          if (r == Req::kF16) r = Req::kF32;
        }
        std::fill(p.out16.begin(), p.out16.end(), false);
      }
    }
    for (Req r : p.in) p.converted = p.converted || r == Req::kF16;
    for (bool b : p.out16) p.converted = p.converted || b;
  }

  // ---- requirements and names -----------------------------------------------------------------------

  void Require() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      const Node& n = g_.nodes[idx];
      const NodePlan& p = plans_[idx];
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        ValueState* s = State(n.inputs[i]);
        if (s == nullptr) continue;
        if (p.in[i] == Req::kF32) {
          if (s->flex && s->source != ValueState::Source::kOuter && !p.block_reason.empty() &&
              IsRecurrentWeight(n, i)) {
            s->weight_f32 = true;
          } else {
            s->need[0] = true;
          }
        }
        if (p.in[i] == Req::kF16) s->need[1] = true;
        if (p.in[i] == Req::kAny) s->need_any = true;
      }
      if (HasSubgraph(n) && !p.control_flow) {
        for (const auto& name : OuterScopeInputs(n)) {
          if (ValueState* s = State(name)) s->need[0] = true;
        }
      }
    }
    const Prec io = io_f32_ ? Prec::kF32 : Prec::kF16;
    for (const auto& v : g_.outputs) {
      ValueState* s = State(v.name);
      if (s == nullptr) continue;
      s->graph_output = true;
      s->output_prec = io;
      // A graph input or sparse initializer cannot be renamed to make room for a Cast: the output keeps
      // the precision it has.
      if (!s->flex && s->home != io && s->source != ValueState::Source::kNode) s->output_prec = s->home;
      s->need[static_cast<int>(s->output_prec)] = true;
    }
    for (auto& [name, s] : values_) {
      // A recurrent weight with no other float32 reader is stored in float16 behind a Cast.
      if (s.weight_f32 && !s.need[0]) s.need[1] = true;
      if (s.weight_f32 && s.need[0]) s.weight_f32 = false;
      if (s.source != ValueState::Source::kOuter) continue;
      for (int p = 0; p < 2; ++p) {
        if (s.need[p]) outer_->NeedFromBody(name, static_cast<Prec>(p));
      }
      if (s.need_any) outer_->NeedAnyFromBody(name);
    }
  }

  void Resolve() {
    for (const auto& name : value_order_) {
      ValueState& s = values_.at(name);
      if (s.source == ValueState::Source::kOuter) {
        for (int p = 0; p < 2; ++p) {
          if (s.need[p]) s.names[p] = outer_->NameForBody(name, static_cast<Prec>(p));
        }
        s.home = s.need[1] && !s.need[0] ? Prec::kF16 : Prec::kF32;
        if (s.need_any && !s.need[0] && !s.need[1]) {
          s.home = outer_->HomeForBody(name);
          s.names[static_cast<int>(s.home)] = outer_->NameForBody(name, s.home);
        }
        continue;
      }
      if (s.flex) {
        if (s.graph_output) {
          s.home = s.output_prec;
        } else {
          s.home = s.need[1] && !s.need[0] ? Prec::kF16 : Prec::kF32;
        }
        s.names[static_cast<int>(s.home)] = name;
        const Prec other = Other(s.home);
        // The copy is made before the in-place conversion, from the untouched float32 data.
        if (s.need[static_cast<int>(other)]) {
          s.names[static_cast<int>(other)] = Fresh(name + Suffix(other));
          CopyConstant(s, name, s.names[static_cast<int>(other)], other);
        }
        if (s.home == Prec::kF16) ConvertConstantInPlace(s, name);
        if (s.weight_f32) {
          s.names[0] = Fresh(name + Suffix(Prec::kF32));
          AddCast(s, name, name, s.names[0], Prec::kF32);
          ++sh_.weight_casts;
        }
        continue;
      }
      const Prec home = s.home;
      if (s.graph_output && s.output_prec != home) {
        // The graph output keeps its name (and type); the producer writes under a new one.
        s.names[static_cast<int>(home)] = Fresh(name + Suffix(home));
        s.names[static_cast<int>(s.output_prec)] = name;
        AddCast(s, name, s.names[static_cast<int>(home)], name, s.output_prec);
      } else {
        s.names[static_cast<int>(home)] = name;
      }
      const Prec other = Other(home);
      if (s.need[static_cast<int>(other)] && s.names[static_cast<int>(other)].empty()) {
        s.names[static_cast<int>(other)] = Fresh(name + Suffix(other));
        AddCast(s, name, s.names[static_cast<int>(home)], s.names[static_cast<int>(other)], other);
      }
    }
  }

  void AddCast(const ValueState& s, const std::string& value, const std::string& from, const std::string& to,
               Prec prec) {
    Node c;
    c.name = Fresh(value + "_cast" + Suffix(prec));
    c.op_type = "Cast";
    c.inputs = {from};
    c.outputs = {to};
    c.attributes.push_back(Attribute::Int("to", static_cast<int64_t>(ToDType(prec))));
    if (s.source == ValueState::Source::kNode) {
      after_[s.node].push_back(std::move(c));
    } else {
      at_start_.push_back(std::move(c));
    }
    ++sh_.casts;
  }

  void ConvertConstantInPlace(const ValueState& s, const std::string& value) {
    int64_t clamped = 0;
    if (s.source == ValueState::Source::kInitializer) {
      Tensor* t = g_.FindInitializer(value);
      *t = ToHalf(*t, &clamped);
      // An initializer that is also listed as a graph input (IR version < 4 style) changes type there too.
      for (auto& in : g_.inputs) {
        if (in.name == value) in.type.elem_type = DType::kFloat16;
      }
      ++sh_.converted_initializers;
    } else {
      ConvertConstantAttrs(g_.nodes[s.node], &clamped);
      ++sh_.converted_nodes;
    }
    RecordClamped(value, clamped);
  }

  // A second copy of the float32 constant `value`, named `new_name`, in precision `prec`.
  void CopyConstant(const ValueState& s, const std::string& value, const std::string& new_name, Prec prec) {
    int64_t clamped = 0;
    if (s.source == ValueState::Source::kInitializer) {
      const Tensor* t = g_.FindInitializer(value);
      Tensor copy = prec == Prec::kF16 ? ToHalf(*t, &clamped) : *t;
      copy.set_name(new_name);
      new_initializers_.push_back(std::move(copy));
      if (model_.ir_version < 4 && g_.FindInput(value) != nullptr) {
        // Before IR version 4 every initializer must also be a graph input.
        ValueInfo in = *g_.FindInput(value);
        in.name = new_name;
        in.type.elem_type = ToDType(prec);
        new_inputs_.push_back(std::move(in));
      }
      if (prec == Prec::kF16) ++sh_.converted_initializers;
    } else {
      const Node& c = g_.nodes[s.node];
      Node twin = c;
      twin.name = Fresh((c.name.empty() ? value : c.name) + Suffix(prec));
      twin.outputs = {new_name};
      if (prec == Prec::kF16) {
        ConvertConstantAttrs(twin, &clamped);
        ++sh_.converted_nodes;
      }
      after_[s.node].push_back(std::move(twin));
    }
    RecordClamped(value, clamped);
  }

  static void ConvertConstantAttrs(Node& c, int64_t* clamped) {
    for (auto& attr : c.attributes) {
      if (attr.name == "value" && !attr.tensors.empty() && attr.tensors[0].dtype() == DType::kFloat) {
        attr.tensors[0] = ToHalf(attr.tensors[0], clamped);
      } else if (attr.name == "sparse_value" && !attr.sparse_tensors.empty() &&
                 attr.sparse_tensors[0].values.dtype() == DType::kFloat) {
        attr.sparse_tensors[0].values = ToHalf(attr.sparse_tensors[0].values, clamped);
      } else if (attr.name == "value_float" || attr.name == "value_floats") {
        // value_float(s) are float32 by definition; only a tensor attribute can carry float16.
        const bool scalar = attr.name == "value_float";
        const std::vector<float> v = scalar ? std::vector<float>{attr.f} : attr.floats;
        const std::vector<int64_t> dims =
            scalar ? std::vector<int64_t>{} : std::vector<int64_t>{static_cast<int64_t>(v.size())};
        attr = Attribute::FromTensor("value", ToHalf(Tensor::FromVector<float>(dims, v), clamped));
      }
    }
  }

  void RecordClamped(const std::string& name, int64_t n) {
    if (n == 0) return;
    sh_.clamped += n;
    json& per_tensor = ctx_.details()["clamped"];
    if (!per_tensor.is_object()) per_tensor = json::object();
    per_tensor[name] = per_tensor.value(name, int64_t{0}) + n;
  }

  // ---- rewriting ------------------------------------------------------------------------------------

  void Rewrite() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      Node& n = g_.nodes[idx];
      const NodePlan& p = plans_[idx];
      if (!p.block_reason.empty()) {
        // Described before any output is renamed, so that the report names the node as the user knows it.
        ++sh_.blocked_nodes;
        ctx_.details()["blocked"][n.Describe()] = p.block_reason;
        ++sh_.blocked_by_reason[p.block_reason];
      }
      if (p.converted) {
        ++sh_.converted_nodes;
        if (n.op_type == "Cast" && p.out16[0])
          n.SetAttr(Attribute::Int("to", static_cast<int64_t>(DType::kFloat16)));
        if (n.op_type == "ConstantOfShape" && p.out16[0]) ConvertConstantOfShape(n);
      }
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const ValueState* s = State(n.inputs[i]);
        if (s == nullptr || p.in[i] == Req::kNone) continue;
        const Prec want = p.in[i] == Req::kF16 ? Prec::kF16 : p.in[i] == Req::kF32 ? Prec::kF32 : s->home;
        n.inputs[i] = s->names[static_cast<int>(want)];
      }
      for (auto& out : n.outputs) {
        const ValueState* s = State(out);
        if (s != nullptr && !s->flex && s->source == ValueState::Source::kNode) {
          out = s->names[static_cast<int>(s->home)];
        }
      }
      if (HasSubgraph(n) && !p.control_flow) {
        for (const auto& name : OuterScopeInputs(n)) {
          const ValueState* s = State(name);
          if (s == nullptr || s->names[0] == name) continue;
          for (auto& a : n.attributes) {
            for (auto& body : a.graphs) RenameFree(body, name, s->names[0]);
          }
        }
      }
    }

    if (outer_ != nullptr) {
      // Outer values a body returns as they are: the float32 name, as the body's output type says.
      for (auto& v : g_.outputs) {
        const ValueState* s = State(v.name);
        if (s != nullptr && s->source == ValueState::Source::kOuter) v.name = s->names[0];
      }
      // The enclosing graph describes its own values; a copy here could go stale.
      std::unordered_set<std::string> outer_names;
      for (const auto& [name, s] : values_) {
        if (s.source == ValueState::Source::kOuter) outer_names.insert(name);
      }
      passes::EraseValueInfo(g_, outer_names);
    }
    if (!io_f32_) {
      for (auto& v : g_.inputs) {
        const ValueState* s = State(v.name);
        if (s != nullptr && s->source == ValueState::Source::kGraphInput) v.type.elem_type = DType::kFloat16;
      }
    }
    auto holds_half = [this](const std::string& name) {
      const ValueState* s = State(name);
      return s != nullptr && s->names[1] == name;
    };
    for (auto& v : g_.outputs) {
      if (holds_half(v.name)) v.type.elem_type = DType::kFloat16;
    }
    for (auto& v : g_.value_info) {
      if (holds_half(v.name) && v.type.kind == TypeInfo::Kind::kTensor) v.type.elem_type = DType::kFloat16;
    }

    // New nodes go right after their producer, so a sorted graph stays sorted.
    std::vector<Node> nodes;
    nodes.reserve(g_.nodes.size() + at_start_.size() + after_.size());
    for (auto& c : at_start_) nodes.push_back(std::move(c));
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      nodes.push_back(std::move(g_.nodes[idx]));
      const auto it = after_.find(idx);
      if (it == after_.end()) continue;
      for (auto& c : it->second) nodes.push_back(std::move(c));
    }
    g_.nodes = std::move(nodes);
    for (auto& t : new_initializers_) g_.initializers.push_back(std::move(t));
    for (auto& v : new_inputs_) g_.inputs.push_back(std::move(v));

    if (outer_ == nullptr && sh_.blocked_nodes > 0) {
      std::string note = "fp16: kept " + std::to_string(sh_.blocked_nodes) + " node(s) in float32:";
      bool first = true;
      for (const auto& [reason, count] : sh_.blocked_by_reason) {
        note += (first ? " " : "; ") + reason + " (" + std::to_string(count) + ")";
        first = false;
      }
      ctx_.Note(note);
    }
  }

  void ConvertConstantOfShape(Node& n) {
    int64_t clamped = 0;
    Attribute* value = n.FindAttr("value");
    if (value == nullptr || value->tensors.empty()) {
      // Without `value` the output is float32 zeros.
      n.SetAttr(Attribute::FromTensor("value", Tensor(DType::kFloat16, {1})));
    } else if (value->tensors[0].dtype() == DType::kFloat) {
      value->tensors[0] = ToHalf(value->tensors[0], &clamped);
    }
    RecordClamped(n.outputs[0], clamped);
  }

  // Renames reads of the outer-scope value `from` inside `g` (at any depth) to `to`.
  static void RenameFree(Graph& g, const std::string& from, const std::string& to) {
    for (const auto& v : g.inputs) {
      if (v.name == from) return;
    }
    for (const auto& t : g.initializers) {
      if (t.name() == from) return;
    }
    for (auto& n : g.nodes) {
      for (auto& in : n.inputs) {
        if (in == from) in = to;
      }
      for (auto& a : n.attributes) {
        for (auto& body : a.graphs) RenameFree(body, from, to);
      }
      if (std::find(n.outputs.begin(), n.outputs.end(), from) != n.outputs.end()) return;
    }
    for (auto& v : g.outputs) {
      if (v.name == from) v.name = to;
    }
    for (auto& v : g.value_info) {
      if (v.name == from) v.name = to;
    }
  }

  void CountAll() {
    ctx_.Count("converted_initializers", sh_.converted_initializers);
    ctx_.Count("converted_nodes", sh_.converted_nodes);
    ctx_.Count("inserted_casts", sh_.casts);
    ctx_.Count("blocked_nodes", sh_.blocked_nodes);
    ctx_.Count("clamped_values", sh_.clamped);
    if (sh_.subgraphs > 0) ctx_.Count("converted_subgraphs", sh_.subgraphs);
    if (sh_.weight_casts > 0) ctx_.Count("float16_weights_cast_to_float32", sh_.weight_casts);
  }

  Model& model_;
  Graph& g_;
  PassContext& ctx_;
  const Fp16Options& opt_;
  const int64_t opset_;

  std::unique_ptr<Shared> owned_;  // the root converter owns what all converters share
  Shared& sh_;
  Converter* outer_;  // the converter of the enclosing graph; null for the main graph
  const bool io_f32_;  // graph inputs and outputs stay float32 (always in bodies)
  std::unordered_set<std::string> local_;  // in a body: names defined in it
  std::vector<std::unique_ptr<Converter>> bodies_;
  std::vector<size_t> order_;
  std::vector<NodePlan> plans_;
  std::map<std::string, ValueState> values_;
  std::vector<std::string> value_order_;  // first-seen order, so that new names do not depend on map order

  std::vector<Node> at_start_;
  std::map<size_t, std::vector<Node>> after_;
  std::vector<Tensor> new_initializers_;
  std::vector<ValueInfo> new_inputs_;

  // Values of the main graph beyond float16's range on the calibration data (FindOverflowingValues).
  std::set<std::string> overflow_;
};

class Fp16Pass : public Pass {
 public:
  explicit Fp16Pass(Fp16Options options) : options_(std::move(options)) {}
  void Run(Model& model, PassContext& ctx) override { Converter(model, ctx, options_).Run(); }

 private:
  Fp16Options options_;
};

}  // namespace

std::unique_ptr<Pass> MakeFp16Pass(const nlohmann::json& options) {
  Fp16Options o;
  o.keep_io_types = options.value("keep_io_types", true);
  if (options.value("default_block_ops", true)) o.block_ops = DefaultBlockOps();
  for (const auto& op : StringList(options.value("block_ops", json::array()))) o.block_ops.insert(op);
  for (const auto& n : StringList(options.value("block_nodes", json::array()))) o.block_nodes.insert(n);
  return std::make_unique<Fp16Pass>(std::move(o));
}

}  // namespace compress
