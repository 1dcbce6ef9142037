#!/usr/bin/python3
"""Generate the benchmark and comparison models for edgeserve.

Run with Debian's interpreter, which has python3-torch, python3-torchvision and
python3-onnx:

    /usr/bin/python3 bench/models/generate.py [OUT_DIR] [--force] [--only NAME ...]

OUT_DIR defaults to bench/models/out/ (git-ignored; generated files are never
committed). For every model NAME it writes:

    NAME_op13.onnx, NAME_op17.onnx   the model exported at opset 13 and 17
    NAME_input.pb, NAME_input.npy    one deterministic input (TensorProto whose
                                     name is the model's input name, and .npy)
    NAME_torch_output.pb             PyTorch's output for that input (TensorProto
                                     named "output"), a third source of truth
                                     next to edgeserve and ONNX Runtime

Models: resnet18, resnet50, mobilenet_v2 (torchvision, input "input"
[batch,3,224,224]), mlp (784-512-512-10, input "input" [batch,784]) and bert
(token ids "input_ids" int64 [batch,seq] -> 4-layer transformer encoder ->
[batch,seq,256]); the output is named "output". The dimensions named batch and
seq are symbolic in the exported graphs; the saved inputs have batch 1 (and
seq 128).

Weights are random but seeded per model, so a model's files do not depend on
which other models are generated. BatchNorm running statistics are recalibrated
on random data before export: with the untouched random-init statistics
(mean 0, var 1) activations shrink or grow layer by layer, and MobileNetV2 then
outputs values near 1e-9, which makes every relative comparison pass
vacuously. Each model's output magnitude is printed to show it is not
degenerate.

A model whose files all exist is skipped unless --force is given; torch is
then not even imported, so a run with everything in place takes a moment.
"""

import argparse
import os
import sys
import time
import warnings
import zlib

try:
    import numpy as np
    import onnx
    from onnx import numpy_helper
except ImportError as exc:  # the first python3 on PATH may lack them
    sys.exit(f"generate.py: {exc}; run it with /usr/bin/python3 "
             "(Debian's python3-numpy, python3-onnx, python3-torch, python3-torchvision)")

OPSETS = (13, 17)
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")

BERT_VOCAB = 1000
BERT_SEQ = 128
BERT_D_MODEL = 256


def image_input(rng):
    return rng.standard_normal((1, 3, 224, 224), dtype=np.float32)


# name -> (input name, input maker, dynamic axes of input and output)
MODELS = {
    "resnet18": ("input", image_input, {0: "batch"}),
    "resnet50": ("input", image_input, {0: "batch"}),
    "mobilenet_v2": ("input", image_input, {0: "batch"}),
    "mlp": ("input",
            lambda rng: rng.standard_normal((1, 784), dtype=np.float32),
            {0: "batch"}),
    "bert": ("input_ids",
             lambda rng: rng.integers(0, BERT_VOCAB, size=(1, BERT_SEQ), dtype=np.int64),
             {0: "batch", 1: "seq"}),
}


def import_torch():
    """Imports torch lazily: it takes seconds, and is only needed to build."""
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        sys.exit(f"generate.py: {exc}; run it with /usr/bin/python3 "
                 "(Debian's python3-torch, python3-torchvision)")
    return torch


def build_model(name):
    """Returns the freshly initialised torch module for NAME (train mode)."""
    torch = import_torch()
    import torchvision
    nn = torch.nn

    class MLP(nn.Module):
        """784-512-512-10 with ReLU, an MNIST-sized classifier."""

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 512)
            self.fc2 = nn.Linear(512, 512)
            self.fc3 = nn.Linear(512, 10)

        def forward(self, x):
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            return self.fc3(x)

    class BertEncoder(nn.Module):
        """Token ids -> token + learned position embedding -> 4 post-norm
        transformer encoder layers (d_model 256, 4 heads, FFN 1024, ReLU)."""

        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(BERT_VOCAB, BERT_D_MODEL)
            self.pos_emb = nn.Embedding(BERT_SEQ, BERT_D_MODEL)
            layer = nn.TransformerEncoderLayer(
                d_model=BERT_D_MODEL, nhead=4, dim_feedforward=1024,
                dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(
                layer, num_layers=4, enable_nested_tensor=False)

        def forward(self, input_ids):
            # arange over the traced length keeps the seq axis symbolic
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.tok_emb(input_ids) + self.pos_emb(positions).unsqueeze(0)
            return self.encoder(x)

    builders = {
        "resnet18": lambda: torchvision.models.resnet18(weights=None),
        "resnet50": lambda: torchvision.models.resnet50(weights=None),
        "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
        "mlp": MLP,
        "bert": BertEncoder,
    }
    return builders[name]()


def model_seed(name):
    """A per-model seed that is stable across runs and Python versions."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def recalibrate_batchnorm(model, rng, passes=8, batch=8):
    """Replaces the random-init BN statistics by cumulative averages of the
    batch statistics seen on random inputs like the one we export with.
    Returns the number of BN layers (0: nothing to do)."""
    torch = import_torch()
    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all passes
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
            model(torch.from_numpy(x))
    model.eval()
    return len(bns)


def build_calibrated(name):
    """The model NAME with seeded weights, BN recalibrated, in eval mode.
    Returns (model, number of BN layers recalibrated)."""
    torch = import_torch()
    seed = model_seed(name)
    torch.manual_seed(seed)
    model = build_model(name)
    n_bn = recalibrate_batchnorm(model, np.random.default_rng(seed))
    model.eval()
    return model, n_bn


def make_input(name):
    """The deterministic input of model NAME (batch 1)."""
    return MODELS[name][1](np.random.default_rng(model_seed(name) + 1))


def out_paths(out_dir, name):
    paths = {f"op{o}": os.path.join(out_dir, f"{name}_op{o}.onnx") for o in OPSETS}
    paths["input_pb"] = os.path.join(out_dir, f"{name}_input.pb")
    paths["input_npy"] = os.path.join(out_dir, f"{name}_input.npy")
    paths["torch_out"] = os.path.join(out_dir, f"{name}_torch_output.pb")
    return paths


def export(model, example, path, opset, input_name, dyn_axes):
    torch = import_torch()
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        # torch 1.13 warns about the traced arange/shape arithmetic and about
        # the experimental opset 17; neither changes the exported graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), tmp,
            input_names=[input_name], output_names=["output"],
            dynamic_axes={input_name: dyn_axes, "output": dyn_axes},
            opset_version=opset, do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL)
    onnx.checker.check_model(onnx.load(tmp))
    os.replace(tmp, path)  # a half-written model never looks complete


def write_file(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def describe(y):
    return (f"output {list(y.shape)} max|y|={np.abs(y).max():.4g} "
            f"mean|y|={np.abs(y).mean():.4g}")


def generate(name, out_dir, force):
    input_name, _, dyn_axes = MODELS[name]
    paths = out_paths(out_dir, name)
    if not force and all(os.path.exists(p) for p in paths.values()):
        y = numpy_helper.to_array(onnx.load_tensor(paths["torch_out"]))
        print(f"{name:13s} exists  {describe(y)}  (skipped; --force regenerates)")
        return

    torch = import_torch()
    t0 = time.time()
    model, n_bn = build_calibrated(name)
    x = make_input(name)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = model(xt).numpy()
    if not np.isfinite(y).all():
        sys.exit(f"generate.py: {name}: PyTorch output is not finite")

    for opset in OPSETS:
        export(model, xt, paths[f"op{opset}"], opset, input_name, dyn_axes)
    write_file(paths["input_pb"],
               numpy_helper.from_array(x, name=input_name).SerializeToString())
    np.save(paths["input_npy"], x)
    # written last: its presence marks the model's files complete
    write_file(paths["torch_out"],
               numpy_helper.from_array(np.ascontiguousarray(y), name="output")
               .SerializeToString())

    bn_note = f"  BN recalibrated ({n_bn} layers)" if n_bn else ""
    print(f"{name:13s} {time.time() - t0:5.1f}s  {describe(y)}{bn_note}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=DEFAULT_OUT,
                    help="output directory (default bench/models/out/)")
    ap.add_argument("--force", action="store_true",
                    help="regenerate even if the files exist")
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), metavar="NAME",
                    help="generate only these models: " + ", ".join(MODELS))
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    if args.force or not all(os.path.exists(p) for name in (args.only or MODELS)
                             for p in out_paths(args.out_dir, name).values()):
        # One thread: multi-threaded reductions (BN statistics, convolutions)
        # change the last bits from run to run, and the files should not.
        import_torch().set_num_threads(1)
    t0 = time.time()
    for name in args.only or MODELS:
        generate(name, args.out_dir, args.force)
    print(f"done in {time.time() - t0:.1f}s -> {args.out_dir}")


if __name__ == "__main__":
    main()
