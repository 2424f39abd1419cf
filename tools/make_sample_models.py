#!/usr/bin/python3
"""Train and export the sample ONNX models used to exercise `compress`.

Run with Debian's interpreter (it needs python3-torch, python3-onnx,
python3-numpy and the dataset-fashion-mnist package):

    /usr/bin/python3 tools/make_sample_models.py [--out models]

Every model is trained on the Fashion-MNIST training split with fixed seeds,
evaluated by the torch model (eval mode) on all 10,000 test images and
exported with a dynamic batch dimension.  Outputs:

    models/*.onnx           opset-17 models as torch exports them
    models/other/*.onnx     old-opset models whose weights live in Constant
                            nodes, the way some other exporters write them
    models/calib/           256 training images for calibration
    models/manifest.json    accuracy, parameter count, size ... per model
    models/README.md        human-readable summary of the manifest
"""

import argparse
import json
import os
import sys
import time
import warnings

# libgomp's default busy-waiting makes the two OpenMP threads fight other
# processes for the CPU: on a loaded 2-core machine a training step became
# 10x slower.  Passive waiting does not change the results.  This must be set
# before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import helper  # noqa: E402

# The converter owns the data format and preprocessing; importing it keeps
# training, evaluation and the CI-side .npy files bit-identical.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist_to_npy as fm  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_THREADS = 2
BATCH_SIZE = 128
CALIB = {"dir": "calib", "split": "train", "offset": 0, "count": 256}


# --------------------------------------------------------------------------
# Data, training and evaluation
# --------------------------------------------------------------------------

def load_tensors(split, source):
    """Return (images [N,1,28,28] float32, labels [N] int64) as tensors."""
    n, rows, cols, pixels, labels = fm.load_split(split, source)
    values = fm.normalise(pixels)
    images = torch.from_numpy(
        np.frombuffer(values, dtype=np.float32).reshape(n, 1, rows, cols).copy())
    labels = torch.from_numpy(np.frombuffer(labels, dtype=np.uint8).astype(np.int64))
    return images, labels


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(model, data, epochs, lr, seed, weight_decay=1e-4, loss="ce"):
    """Train with AdamW and a one-cycle schedule; returns the model.

    `loss` is "ce" for classifiers and "mse" for the autoencoder, whose
    target is its own input.
    """
    images, labels = data
    seed_everything(seed)
    # A dedicated generator keeps the shuffling order independent of how
    # many random numbers model initialisation consumed.
    shuffle = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(images) + BATCH_SIZE - 1) // BATCH_SIZE
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=shuffle)
        total, t0 = 0.0, time.time()
        for i in range(steps_per_epoch):
            idx = order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]
            x = images[idx]
            out = model(x)
            if loss == "mse":
                batch_loss = F.mse_loss(out, x)
            else:
                batch_loss = F.cross_entropy(out, labels[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            sched.step()
            total += batch_loss.item() * len(idx)
        print("    epoch %d/%d  loss %.4f  (%.1fs)"
              % (epoch + 1, epochs, total / len(images), time.time() - t0),
              flush=True)
    model.eval()
    return model


@torch.no_grad()
def evaluate_top1(model, data):
    images, labels = data
    model.eval()
    correct = 0
    for i in range(0, len(images), 1000):
        pred = model(images[i:i + 1000]).argmax(dim=1)
        correct += (pred == labels[i:i + 1000]).sum().item()
    return correct / len(images)


@torch.no_grad()
def evaluate_mse(model, data):
    images, _ = data
    model.eval()
    total = 0.0
    for i in range(0, len(images), 1000):
        x = images[i:i + 1000]
        total += F.mse_loss(model(x), x, reduction="sum").item()
    return total / images.numel()


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

class Linear(nn.Linear):
    """nn.Linear that trains through oneDNN's 1x1 convolution.

    Debian's torch links the reference BLAS, which makes every matmul-based
    layer 20-40x slower than the oneDNN convolution kernels.  Outside of
    export the product is computed as a 1x1 convolution (same maths, same
    parameters); during torch.onnx.export the stock nn.Linear forward runs, so
    the graph contains the usual Gemm or MatMul + Add.
    """

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return super().forward(x)
        lead = x.shape[:-1]
        y = F.conv2d(x.reshape(-1, self.in_features, 1, 1),
                     self.weight[:, :, None, None], self.bias)
        return y.reshape(*lead, self.out_features)


def attention_matmul(a, b):
    """torch.matmul for the small per-head matrices of self-attention.

    For the same reason as Linear above, bmm on tiny matrices is the slowest
    op of a training step; a broadcast multiply + sum is much faster on the
    CPU.  Export still records a plain MatMul.
    """
    if torch.onnx.is_in_onnx_export():
        return torch.matmul(a, b)
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(dim=-2)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            Linear(784, 256), nn.ReLU(),
            Linear(256, 128), nn.ReLU(),
            Linear(128, 10))

    def forward(self, x):
        return self.net(x)


def conv_bn(cin, cout, k, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualCNN(nn.Module):
    """Small CNN with BatchNorm, a depthwise-separable residual block and GAP.

    The block gives the graph an Add joining two branches and a grouped
    convolution with groups == channels, both of which the compressor must
    handle when it rewrites weights.
    """

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 32, 3)
        self.block = nn.Sequential(
            conv_bn(32, 32, 3, groups=32),          # depthwise
            conv_bn(32, 32, 1, relu=False))         # pointwise
        self.pool = nn.MaxPool2d(2)
        self.conv2 = conv_bn(32, 64, 3)
        self.conv3 = conv_bn(64, 64, 3)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = Linear(64, 10)

    def forward(self, x):
        # Pooling right after the stem keeps the block at 14x14: at 28x28 it
        # would dominate training time on the CPU.
        x = self.pool(self.stem(x))
        x = F.relu(x + self.block(x))
        x = self.pool(self.conv2(x))
        x = self.conv3(x)
        return self.fc(torch.flatten(self.gap(x), 1))


class Attention(nn.Module):
    """Multi-head self-attention written with plain matmul/softmax/transpose.

    Writing it by hand (instead of nn.MultiheadAttention) keeps the exported
    graph made of MatMul, Softmax, Transpose and Reshape at every opset.
    """

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)        # 3, b, heads, t, head_dim
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = attention_matmul(q, k.transpose(-2, -1)) * (self.head_dim ** -0.5)
        att = torch.softmax(att, dim=-1)
        y = attention_matmul(att, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp_dim, norm=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim) if norm else nn.Identity()
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim) if norm else nn.Identity()
        self.mlp = nn.Sequential(Linear(dim, mlp_dim), nn.GELU(),
                                 Linear(mlp_dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Pre-norm vision transformer: 7x7 patches -> 16 tokens + class token."""

    def __init__(self, dim=64, depth=2, heads=4, mlp_dim=128, patch=7):
        super().__init__()
        tokens = (28 // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)    # b, 16, dim
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class HardSwishCNN(nn.Module):
    """MobileNetV3-flavoured CNN: inverted residual with squeeze-excite."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(16), nn.Hardswish())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1), nn.BatchNorm2d(48),
                                    nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(48, 48, 3, padding=1, groups=48),
                                nn.BatchNorm2d(48), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(48, 12, 1),
                                nn.ReLU(), nn.Conv2d(12, 48, 1), nn.Hardsigmoid())
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 64, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(64), nn.Hardswish(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  Linear(64, 10))

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(self.expand(x))
        y = self.project(y * self.se(y))
        return self.head(x + y)


class AutoEncoder(nn.Module):
    """Conv autoencoder: strided convs down, ConvTranspose + Upsample up."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),     # 14x14
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())    # 7x7
        self.decoder = nn.Sequential(
            # Kernel 2 (not 4) because torch's CPU ConvTranspose goes through
            # the slow BLAS path and dominated the training time.
            nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(),            # 14
            nn.Upsample(scale_factor=2, mode="nearest"),                   # 28
            nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AttentionClassifier(nn.Module):
    """Tiny transformer-style classifier for old-opset export.

    Rows of the image are the tokens (28 tokens of 28 pixels), which avoids
    any patch reshaping.  LayerNorm is kept so that its opset-9
    decomposition (ReduceMean/Sub/Pow/Sqrt/Div) also appears in the graph.
    """

    def __init__(self, dim=48, heads=4):
        super().__init__()
        self.embed = Linear(28, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, 28, dim) * 0.02)
        self.block = EncoderBlock(dim, heads, 2 * dim)
        self.norm = nn.LayerNorm(dim)
        self.head = Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x.squeeze(1)) + self.pos_embed    # b, 28, dim
        x = self.norm(self.block(x))
        return self.head(x.mean(dim=1))


# --------------------------------------------------------------------------
# Export and ONNX post-processing
# --------------------------------------------------------------------------

def export(model, path, opset, output_name="logits", **kwargs):
    model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    with warnings.catch_warnings():
        # Old opsets make torch warn about every dynamically shaped op.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, dummy, path, opset_version=opset,
            input_names=["input"], output_names=[output_name],
            dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
            **kwargs)
    onnx.checker.check_model(onnx.load(path), full_check=True)


def initializers_to_constants(path):
    """Move every initializer into a Constant node at the top of the graph.

    Some exporters store weights this way; the compressor has to find and
    rewrite weights there too.
    """
    model = onnx.load(path)
    graph = model.graph
    names = {init.name for init in graph.initializer}
    constants = [helper.make_node("Constant", [], [init.name], value=init,
                                  name="const_" + init.name)
                 for init in graph.initializer]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    # Weights must not be visible as graph inputs either.
    inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def op_types(path):
    return {n.op_type for n in onnx.load(path).graph.node}


def onnx_parameter_count(path):
    """Elements in all initializers plus all Constant-node tensors."""
    model = onnx.load(path)
    total = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    total += int(np.prod(attr.t.dims))
    return total


def check_io(path, output_shape):
    """Assert the graph has one dynamic-batch input and output as documented."""
    graph = onnx.load(path).graph
    inp, out = graph.input, graph.output
    assert [i.name for i in inp] == ["input"], [i.name for i in inp]
    dims = inp[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert inp[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(out) == 1
    odims = out[0].type.tensor_type.shape.dim
    assert odims[0].dim_param == "batch", path
    assert [d.dim_value for d in odims[1:]] == list(output_shape[1:]), path


def verify_bn_kept(path):
    """BatchNormalization must be present and in inference form."""
    bns = [n for n in onnx.load(path).graph.node
           if n.op_type == "BatchNormalization"]
    assert bns, "%s: no BatchNormalization node" % path
    for n in bns:
        assert len(n.output) == 1, "%s: %s has training outputs" % (path, n.name)
        for a in n.attribute:
            assert not (a.name == "training_mode" and a.i), n.name
    return len(bns)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

# name, file, class, opset, epochs, lr, seed, description
MAIN_MODELS = [
    ("mlp", "mlp.onnx", MLP, 17, 12, 1e-3, 1,
     "MLP: Flatten -> Linear 784x256 -> ReLU -> Linear 256x128 -> ReLU -> "
     "Linear 128x10"),
    ("cnn", "cnn.onnx", ResidualCNN, 17, 5, 3e-3, 2,
     "CNN: conv3x3 1->32 +BN+ReLU; MaxPool; residual block [depthwise 3x3 "
     "(groups=32) +BN+ReLU, pointwise 1x1 +BN] + Add + ReLU; conv3x3 32->64 "
     "+BN+ReLU; MaxPool; conv3x3 64->64 +BN+ReLU; GlobalAveragePool; "
     "Linear 64x10. BatchNorm folded into the convolutions by the exporter"),
    ("vit", "vit.onnx", ViT, 17, 10, 2e-3, 3,
     "ViT: 7x7 patch embedding (Conv stride 7) -> 16 tokens + class token, "
     "learned position embeddings, 2 pre-norm encoder blocks (LayerNorm, "
     "4-head self-attention dim 64 via MatMul/Softmax/Transpose, MLP 64-128-64 "
     "with GELU), final LayerNorm, Linear 64x10 on the class token"),
]

OTHER_MODELS = [
    ("hardswish_cnn_op11", "other/hardswish_cnn_op11.onnx", HardSwishCNN, 11,
     2, 3e-3, 4, "classification",
     "MobileNetV3-style CNN: Hardswish (exported as HardSigmoid+Mul), "
     "inverted residual with depthwise conv and Hardsigmoid squeeze-excite; "
     "opset 11, BatchNorm folded, weights in Constant nodes"),
    ("autoencoder_op10", "other/autoencoder_op10.onnx", AutoEncoder, 10,
     2, 3e-3, 5, "reconstruction",
     "Conv autoencoder: 2 strided convs down to 32x7x7, ConvTranspose 2x2 "
     "stride 2, nearest Upsample x2 (Resize), conv3x3 -> [batch,1,28,28]; "
     "opset 10, weights in Constant nodes"),
    ("attention_op9", "other/attention_op9.onnx", AttentionClassifier, 9,
     2, 3e-3, 6, "classification",
     "Attention classifier: image rows as 28 tokens, Linear 28->48, 1 encoder "
     "block (4-head self-attention via MatMul/Softmax/Transpose, MLP with "
     "GELU, LayerNorm decomposed into primitive ops), mean pooling, "
     "Linear 48x10; opset 9, weights in Constant nodes"),
]


MAX_FILE_BYTES = 2 * 1024 * 1024


def entry(name, file, description, opset, path, epochs, seed, model, task,
          output, **metric):
    size = os.path.getsize(path)
    assert size < MAX_FILE_BYTES, "%s is %d bytes" % (path, size)
    e = {"name": name, "file": file, "description": description,
         "task": task, "output": output,
         "opset": opset, "parameters": onnx_parameter_count(path),
         "torch_parameters": sum(p.numel() for p in model.parameters())}
    e.update(metric)
    e.update({"test_images": 10000, "file_bytes": size,
              "train_epochs": epochs, "seed": seed,
              "op_types": sorted(op_types(path))})
    return e


def write_readme(out_dir, manifest):
    rows = []
    for m in manifest["models"]:
        if "fp32_top1" in m:
            metric = "top-1 %.2f%%" % (100 * m["fp32_top1"])
        else:
            metric = "MSE %.4f" % m["fp32_mse"]
        rows.append("| `%s` | %d | %s | %s | %.0f KB |"
                    % (m["file"], m["opset"], format(m["parameters"], ","),
                       metric, m["file_bytes"] / 1024))
    details = "\n".join("- `%s`: %s." % (m["file"], m["description"])
                        for m in manifest["models"])
    text = """# Sample models

Small models trained on Fashion-MNIST for testing `compress`.  All of them
take a normalised image batch `input` of shape `[batch,1,28,28]` (float32,
NCHW) with a dynamic batch dimension; classifiers output `logits`
`[batch,10]`.  Accuracy is top-1 of the fp32 torch model on all 10,000 test
images; the autoencoder reports its mean squared reconstruction error on the
same (normalised) images.  `parameters` counts every element of every
initializer and every `Constant` tensor in the .onnx file.

| file | opset | parameters | fp32 test metric | size |
|------|------:|-----------:|------------------|-----:|
%s

%s

`cnn.onnx` and `cnn_bn.onnx` hold the same trained network: the first as
torch exports it for inference (BatchNorm folded into the convolutions), the
second with its `BatchNormalization` nodes kept, for testing BatchNorm
folding.  The models in `other/` use old opsets and store every weight in a
`Constant` node instead of an initializer, as some other exporters do.

`manifest.json` holds the same figures in machine-readable form (plus the
op types of each graph, the number of trainable torch parameters, epochs
and seeds).  This file and the manifest are written by the generator; edit
`tools/make_sample_models.py` rather than this file.

## Preprocessing

`x = (pixel / 255 - %.4f) / %.4f`, implemented once in
`tools/fashion_mnist_to_npy.py` and used for training, evaluation and
calibration.

## Evaluation and calibration data

Evaluation data is not stored; produce it with the standard-library-only
converter (needs `dataset-fashion-mnist`, or `--source DIR` pointing at the
IDX `.gz` files):

    python3 tools/fashion_mnist_to_npy.py --split test --out DIR

which writes `DIR/images.npy` (`[10000,1,28,28]` float32) and
`DIR/labels.npy` (`[10000]` int64).  `--offset K`, `--count N` select a
slice and `--per-file` writes one `sample_NNNNN.npy` `[1,28,28]` per image.

`calib/` holds %d images from the %s split starting at offset %d
(`images.npy`, `labels.npy`) for calibration.

## Regenerating

    /usr/bin/python3 tools/make_sample_models.py

needs Debian's `python3-torch`, `python3-onnx`, `python3-numpy` and
`dataset-fashion-mnist`.  Training uses fixed seeds and deterministic
algorithms on 2 CPU threads, so a rerun on the same machine reproduces the
weights exactly (other CPUs or library builds may differ in the last bits and
hence slightly in accuracy).  It takes about 11 minutes on an idle 2-core
machine, considerably longer when other jobs share the CPUs.
""" % ("\n".join(rows), details, fm.MEAN, fm.STD, CALIB["count"],
       CALIB["split"], CALIB["offset"])
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "models"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--source", default=fm.DEFAULT_SOURCE,
                        help="Fashion-MNIST IDX folder (default: %(default)s)")
    args = parser.parse_args(argv)

    start = time.time()
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    out = args.out
    os.makedirs(os.path.join(out, "other"), exist_ok=True)

    train_data = load_tensors("train", args.source)
    test_data = load_tensors("test", args.source)
    models = []

    for name, file, cls, opset, epochs, lr, seed, desc in MAIN_MODELS:
        print("== %s" % name, flush=True)
        seed_everything(seed)
        model = train(cls(), train_data, epochs, lr, seed)
        top1 = evaluate_top1(model, test_data)
        print("    top-1 %.4f" % top1, flush=True)
        path = os.path.join(out, file)
        export(model, path, opset)
        check_io(path, (None, 10))
        models.append(entry(name, file, desc, opset, path, epochs, seed, model,
                            "classification", "logits",
                            fp32_top1=round(top1, 4)))
        if name == "cnn":
            # Without the eval-mode peephole pass (skipped for PRESERVE) the
            # exporter keeps BatchNormalization instead of fusing it.
            bn_path = os.path.join(out, "cnn_bn.onnx")
            export(model, bn_path, opset, do_constant_folding=False,
                   training=torch.onnx.TrainingMode.PRESERVE)
            check_io(bn_path, (None, 10))
            n_bn = verify_bn_kept(bn_path)
            assert "BatchNormalization" not in op_types(path)
            models.append(entry(
                "cnn_bn", "cnn_bn.onnx",
                "Same trained network as cnn.onnx, exported with its %d "
                "BatchNormalization nodes kept (inference form)" % n_bn,
                opset, bn_path, epochs, seed, model, "classification",
                "logits", fp32_top1=round(top1, 4)))
        if name == "vit":
            assert "LayerNormalization" in op_types(path)

    for name, file, cls, opset, epochs, lr, seed, task, desc in OTHER_MODELS:
        print("== %s" % name, flush=True)
        seed_everything(seed)
        is_ae = task == "reconstruction"
        output = "reconstruction" if is_ae else "logits"
        model = train(cls(), train_data, epochs, lr, seed,
                      loss="mse" if is_ae else "ce")
        path = os.path.join(out, file)
        if is_ae:
            metric = {"fp32_mse": round(evaluate_mse(model, test_data), 4)}
            export(model, path, opset, output_name=output)
            check_io(path, (None, 1, 28, 28))
        else:
            metric = {"fp32_top1": round(evaluate_top1(model, test_data), 4)}
            export(model, path, opset)
            check_io(path, (None, 10))
        print("    %s" % metric, flush=True)
        initializers_to_constants(path)
        m = onnx.load(path)
        assert not m.graph.initializer and m.opset_import[0].version == opset
        ops = op_types(path)
        if name.startswith("hardswish"):
            assert "HardSwish" not in ops and "HardSigmoid" in ops, ops
        if is_ae:
            assert "ConvTranspose" in ops and ops & {"Resize", "Upsample"}, ops
        models.append(entry(name, file, desc, opset, path, epochs, seed, model,
                            task, output, **metric))

    print("== calibration slice", flush=True)
    fm.convert(os.path.join(out, CALIB["dir"]), split=CALIB["split"],
               source=args.source, offset=CALIB["offset"],
               count=CALIB["count"])

    manifest = {
        "generator": "tools/make_sample_models.py",
        "dataset": "fashion-mnist",
        "preprocessing": {"scale": 1 / 255, "mean": fm.MEAN, "std": fm.STD,
                          "layout": "NCHW [batch,1,28,28] float32"},
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "models": models,
        "calibration": CALIB,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    write_readme(out, manifest)
    print("done in %.0fs" % (time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
