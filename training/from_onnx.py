"""A training checkpoint from one of our exported FAN files, so training can go on from
the shipped weights (``train_2d --init models/fan2d_compact.onnx``, ``--teacher``).

Checkpoints are not committed (only the ONNX files are), and they do not outlive the
machine that trained them; the fp32 ONNX file holds every weight, in another form:
  - each convolution's BatchNorm is folded into it (post-activated and plain blocks,
    ``block: "post"`` or ``"plain"``, whose convolutions each lead their BatchNorm); a
    pre-activated network keeps BatchNorm nodes and is refused;
  - the last stack's head is cut to the file's part: the 2D maps (``fan2d``, with the
    presence head) or the 3D ones (``fan3d``, without it). The missing maps start as
    copies of the present ones (the conventions agree on frontal faces, as in
    ``widen_to_3d``), and a missing presence head starts untrained.

BatchNorm comes back with statistics measured on real crops: the folded convolution
``W x + b`` is split into the convolution ``W x`` and a BatchNorm whose running mean and
variance are that output's per-channel mean and variance over ``inputs`` and whose
affine part undoes them. The network computes exactly what the file does in eval mode
(checked against onnxruntime here), and in training mode, where a batch normalises by
its own statistics, nearly the same, so fine-tuning starts from the shipped model
instead of from a network whose every BatchNorm first rescales its input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.model import FAN, FOLDED_BLOCKS, LastStack
from util.model_facts import LandmarkFacts
from util.runtime import read_spec, spec_facts

# Eval-mode outputs of the imported network may differ from onnxruntime's by float
# rounding only (heatmaps reach about 1).
MAX_OUTPUT_DIFFERENCE = 1e-3


def _module_name(node_name: str) -> str:
    """The torch module a node of torch's ONNX export belongs to: "/stem/stem.6/conv1/
    conv1.0/Conv" -> "stem.6.conv1.0" (a Sequential's child repeats its parent's name)."""
    path: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def _conv_batchnorms(net: nn.Module) -> dict[str, str]:
    """conv name -> name of the BatchNorm right after it in the same Sequential."""
    pairs = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, first), (b, second) in zip(children, children[1:], strict=False):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    pairs[f"{name}.{a}"] = f"{name}.{b}"
    return pairs


def _onnx_weights(model: onnx.ModelProto, path: Path) -> dict[str, list[np.ndarray]]:
    """module name -> the weights of its Conv or Gemm node (weight, bias); the last
    stack's head, a functional conv at the top level, is "last_head"."""
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    weights: dict[str, list[np.ndarray]] = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            raise ValueError(f"{path}: BatchNorm not folded (a pre-activated network)")
        if node.op_type not in ("Conv", "Gemm"):
            continue
        arrays = [tensors[name] for name in node.input[1:] if name]
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if not attrs.get("transB", 0):
                arrays[0] = arrays[0].T
        name = _module_name(node.name) or "last_head"
        if name in weights:
            raise ValueError(f"{path}: two weight nodes for {name}")
        weights[name] = arrays
    return weights


def _place_weights(net: FAN, weights: dict[str, list[np.ndarray]], part: str, path: Path) -> None:
    """Load the file's weights into ``net``, folded BatchNorms as identities (their
    folded bias in the BatchNorm's bias)."""
    modules = dict(net.named_modules())
    batchnorms = _conv_batchnorms(net)
    last = f"heads.{len(net.heads) - 1}"
    n = net.landmarks
    with torch.no_grad():
        for name, arrays in weights.items():
            tensors = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays]
            if name == "last_head":
                head = modules[last]
                rows = slice(0, n) if part == "2d" else slice(n, n + tensors[0].shape[0])
                # The maps the file does not hold start as copies of those it does.
                for i in range(0, head.weight.shape[0], tensors[0].shape[0]):
                    head.weight[i : i + tensors[0].shape[0]] = tensors[0]
                    head.bias[i : i + tensors[0].shape[0]] = tensors[1]
                head.weight[rows], head.bias[rows] = tensors[0], tensors[1]
                continue
            module = modules.get(name)
            if module is None or module.weight.shape != tensors[0].shape:
                shape = None if module is None else tuple(module.weight.shape)
                raise ValueError(
                    f"{path}: {name} {tuple(tensors[0].shape)} does not fit the "
                    f"architecture its spec gives ({shape})"
                )
            module.weight.copy_(tensors[0])
            bias = tensors[1] if len(tensors) > 1 else torch.zeros(tensors[0].shape[0])
            if name in batchnorms:
                bn = modules[batchnorms[name]]
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0)
                bn.weight.fill_(float(np.sqrt(1.0 + bn.eps)))
                bn.bias.copy_(bias)
            else:
                module.bias.copy_(bias)
    expected = {name for name, m in modules.items() if isinstance(m, nn.Conv2d | nn.Linear)}
    expected.discard(last)
    if part != "2d":  # the 3D file has no presence head
        expected -= {name for name in expected if name.startswith("presence.")}
    missing = sorted(expected - set(weights))
    if missing:
        raise ValueError(f"{path}: no weights for {', '.join(missing[:3])}")


def _measure_batchnorms(net: FAN, inputs: list[np.ndarray]) -> None:
    """Split each folded convolution into the convolution and a BatchNorm with its
    output's statistics over ``inputs`` (same eval-mode function)."""
    modules = dict(net.named_modules())
    batchnorms = _conv_batchnorms(net)
    sums: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            flat = output.detach().transpose(0, 1).reshape(output.shape[1], -1).double()
            s = sums.setdefault(name, [torch.zeros(flat.shape[0], dtype=torch.float64)] * 3)
            sums[name] = [s[0] + flat.shape[1], s[1] + flat.sum(1), s[2] + (flat**2).sum(1)]

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in batchnorms]
    net.eval()
    with torch.no_grad():
        for batch in np.array_split(np.concatenate(inputs), max(1, len(inputs) // 16)):
            net(torch.from_numpy(batch))
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        for name, bn_name in batchnorms.items():
            count, total, squares = sums[name]
            mean = total / count
            var = (squares / count - mean**2).clamp_min(1e-12)
            bn = modules[bn_name]
            bn.bias.add_(mean.float())
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())


def _check_against_file(net: FAN, path: Path, part: str, inputs: list[np.ndarray]) -> float:
    """Largest difference of the network's outputs from onnxruntime's on ``inputs``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.concatenate(inputs[:8])
    expected = session.run(None, {session.get_inputs()[0].name: batch})
    with torch.no_grad():
        got = LastStack(net.eval(), part)(torch.from_numpy(batch))
    got = got if isinstance(got, tuple) else (got,)
    return max(float(np.abs(e - g.numpy()).max()) for e, g in zip(expected, got, strict=True))


def checkpoint_from_onnx(path: Path, inputs: list[np.ndarray] | None = None) -> dict:
    """{"config", "net"} as a training checkpoint, from our fp32 FAN file ``path``.
    ``inputs``: (1, 3, S, S) crops the BatchNorm statistics are measured on (default:
    64 training crops made as the tool makes them). A ValueError names the file when it
    is not such a file or the network does not reproduce it."""
    path = Path(path)
    spec = read_spec(path)
    facts = spec_facts(spec, path)
    config = facts.architecture if isinstance(facts, LandmarkFacts) else None
    if config is None:
        raise ValueError(f"{path}: not one of our FAN files (no architecture in its spec)")
    if facts.precision == "int8":
        raise ValueError(f"{path}: an int8 file; import its fp32 file")
    if config.get("block") not in FOLDED_BLOCKS:
        kinds = " and ".join(FOLDED_BLOCKS)
        raise ValueError(f"{path}: a {config.get('block')!r}-block network (only {kinds} import)")
    part = "2d" if spec.kind == "fan2d" else "3d"
    net = FAN(**config)
    _place_weights(net, _onnx_weights(onnx.load(str(path)), path), part, path)
    if inputs is None:
        from training.paths import DATA_300W
        from training.quantize import model_inputs, pick_faces

        inputs = model_inputs(spec, pick_faces(DATA_300W / "train", 64))
        if not inputs:
            raise ValueError(f"{path}: no training faces to measure BatchNorm on")
    _measure_batchnorms(net, inputs)
    difference = _check_against_file(net, path, part, inputs)
    if difference > MAX_OUTPUT_DIFFERENCE:
        raise ValueError(f"{path}: the imported network differs from the file by {difference:.3g}")
    copied = None if not config.get("landmarks_3d") else ("3d" if part == "2d" else "2d")
    # "copied_maps": the last stack's maps that are copies, not the file's (a teacher
    # must not teach them).
    return {"config": dict(config), "net": net.state_dict(), "copied_maps": copied}


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint (torch file), or one made from our FAN ONNX file."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            return checkpoint_from_onnx(path)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    return torch.load(path, weights_only=False)
