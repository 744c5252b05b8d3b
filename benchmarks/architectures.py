"""Time candidate 2D architectures before a long training run: onnxruntime latency
(1 thread, batch 1; with ``--int8`` also quantized as training/quantize.py ships
models) and torch training throughput (2 threads, batch 16).

    python -m benchmarks.architectures                       # the candidates of issue 9
    python -m benchmarks.architectures post,2,64,4 pre,2,80,4  # block,stacks,channels,depth
    python -m benchmarks.architectures --int8 post,2,80,4 plain,2,64,4

Random weights: this measures cost, not accuracy. Other work on the machine slows every
figure alike; compare rows of one run (fp32 and int8 of a row are timed interleaved).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from training.model import BLOCKS, FAN, LastStack, count_macs

CANDIDATES = (
    "pre,2,80,4", "post,2,80,4", "post,2,96,4", "post,1,128,4", "post,1,96,4", "post,2,64,4",
)  # fmt: skip
# int8 ranges need real crops only to be realistic; timing needs few
CALIBRATION_FACES = 8


def onnxruntime_ms(net: torch.nn.Module, int8: bool = False, runs: int = 25) -> tuple[float, ...]:
    """Median ms of the exported network (and of its int8 file), 1 thread."""
    from training import quantize
    from training.export import export_onnx
    from util.landmark_stage import ORIGINAL_FAN_SPEC

    with tempfile.TemporaryDirectory(prefix="architectures_") as tmp:
        paths = [Path(tmp) / "fp32.onnx"]
        export_onnx(LastStack(net.eval()), paths[0], ORIGINAL_FAN_SPEC)
        if int8:
            faces = quantize.pick_faces(quantize.DEFAULT_DATA, CALIBRATION_FACES)
            if not faces:
                raise SystemExit(f"--int8 needs training faces in {quantize.DEFAULT_DATA}")
            paths.append(Path(tmp) / "int8.onnx")
            inputs = quantize.model_inputs(ORIGINAL_FAN_SPEC, faces)
            quantize.quantize(paths[0], paths[1], inputs, ORIGINAL_FAN_SPEC)
        x = inputs[0] if int8 else np.zeros((1, 3, 256, 256), np.float32)
        return tuple(quantize.compare_latency(paths, x, runs))


def training_images_per_second(net: torch.nn.Module, steps: int = 3) -> float:
    torch.set_num_threads(2)
    net = net.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters())
    x = torch.rand(16, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = sum(o.square().mean() for o in net(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 16 * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "candidates", nargs="*", default=list(CANDIDATES),
        help=f"block,stacks,channels,depth (blocks: {', '.join(sorted(BLOCKS))})",
    )  # fmt: skip
    parser.add_argument("--int8", action="store_true", help="also time the int8 file")
    parser.add_argument("--no-training", action="store_true", help="skip the training column")
    args = parser.parse_args(argv)
    print(
        "block stacks channels depth   GMACs  fp32 ms"
        + ("  int8 ms" if args.int8 else "")
        + ("" if args.no_training else "  training img/s")
    )
    for text in args.candidates:
        block, stacks, channels, depth = text.split(",")
        if block not in BLOCKS:
            parser.error(f"{text}: block {block!r} is not one of {', '.join(sorted(BLOCKS))}")
        torch.manual_seed(0)
        net = FAN(int(stacks), int(channels), int(depth), block=block)
        times = onnxruntime_ms(net, args.int8)
        line = f"{block:<5} {stacks:>6} {channels:>8} {depth:>5}  {count_macs(net) / 1e9:6.2f}"
        line += "".join(f"  {t:7.1f}" for t in times)
        if not args.no_training:
            line += f"  {training_images_per_second(net):14.1f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
