"""Time candidate 2D architectures before a long training run: onnxruntime latency
(fp32, 1 thread, batch 1) and torch training throughput (2 threads, batch 16).

    python -m benchmarks.architectures                       # the candidates of issue 9
    python -m benchmarks.architectures post,2,64,4 pre,2,80,4  # block,stacks,channels,depth

Random weights: this measures cost, not accuracy. Other work on the machine slows every
figure alike; compare rows of one run.
"""

from __future__ import annotations

import io
import sys
import time
import warnings

import numpy as np
import torch

from training.model import FAN, LastStack, count_macs

CANDIDATES = (
    "pre,2,80,4", "post,2,80,4", "post,2,96,4", "post,1,128,4", "post,1,96,4", "post,2,64,4",
)  # fmt: skip


def onnxruntime_ms(net: torch.nn.Module, runs: int = 25) -> float:
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastStack(net.eval()), torch.zeros(1, 3, 256, 256), buffer, opset_version=17,
            dynamo=False,
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {
        session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 256, 256), np.float32)
    }
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


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


def main() -> int:
    print("block stacks channels depth   GMACs  onnxruntime ms  training img/s")
    for text in sys.argv[1:] or CANDIDATES:
        block, stacks, channels, depth = text.split(",")
        torch.manual_seed(0)
        net = FAN(int(stacks), int(channels), int(depth), block=block)
        print(
            f"{block:<5} {stacks:>6} {channels:>8} {depth:>5}  {count_macs(net) / 1e9:6.2f}"
            f"  {onnxruntime_ms(net):14.1f}  {training_images_per_second(net):14.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
