"""Export a trained torch network to ONNX with its model spec in the metadata."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from util.runtime import ModelSpec


def export_onnx(
    net: nn.Module,
    path: Path,
    spec: ModelSpec,
    input_channels: int = 3,
    input_name: str = "input",
    output_name: str | list[str] = "output",
) -> None:
    """Write ``net`` (eval mode, float32) as ONNX with ``model_spec`` metadata.

    The batch axis is dynamic, so the tool can run a face's flip views, or every face
    of an image, in one call.
    """
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    net = net.eval()
    height, width = spec.input_size
    dummy = torch.zeros(1, input_channels, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (dummy,),
            str(tmp),
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in [input_name, *output_names]},
            opset_version=17,
            dynamo=False,
        )
    write_spec(tmp, spec, path)
    tmp.unlink()


def write_spec(path: Path, spec: ModelSpec, out: Path | None = None) -> None:
    """Set the ``model_spec`` metadata of an ONNX file; written atomically to ``out``
    (default: in place)."""
    out = out or path
    model = onnx.load(str(path))
    for entry in list(model.metadata_props):
        if entry.key == "model_spec":
            model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key, entry.value = "model_spec", json.dumps(spec.to_dict())
    onnx.checker.check_model(model)
    tmp = out.with_name(out.name + ".spec.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
