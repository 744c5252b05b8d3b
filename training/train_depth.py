"""Train the depth network: 71-channel input (crop + Gaussians of the 2D points) -> 68 z.

    python -m training.train_depth                   # the shipped model (fixed seed)

z labels come from fitting the 3D shape prior (models/shape_prior.npz, built from
AFLW2000-3D shapes) to each augmented face's annotated 2D points; the network sees
those points jittered as a 2D model errs. z is in crop pixels, zero-mean, larger =
closer. Writes models/depth_compact.onnx with its spec (sigma, z scale and sign) in metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from training.data import (
    DATA_ROOT,
    CropSettings,
    Face,
    load_box_stats,
    load_folder,
    make_crop,
    validation_crop,
)
from training.depth_labels import DEFAULT_PRIOR, depth_labels
from training.export import export_onnx
from training.loop import TrainLoop
from training.model import DepthNet, count_macs
from training.runlog import RunLog
from util.crop import transform_points
from util.heatmap_codec import HeatmapCodec
from util.landmarks import box_size
from util.runtime import ModelSpec
from util.shape_prior import ShapePrior

POOL = 4  # the network's first layer; training builds the pooled input directly


def depth_spec(crop: CropSettings, sigma: float) -> ModelSpec:
    """The spec the depth model is trained for and exported with: the 2D model's crop
    size, Gaussian maps of ``sigma`` crop px, z as given in crop pixels; the input
    convention is ModelSpec's default (RGB, 0-1, NCHW), as the 2D model's."""
    return ModelSpec(
        kind="depth",
        input_size=(crop.size, crop.size),
        extra={"heatmap_sigma": sigma, "z_scale": 1.0, "z_sign": 1.0},
    )


def pooled_input(crop: np.ndarray, points: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(71, 64, 64) float32: what the network's first layer (a 4x4 average pool) makes
    of the tool's input: the crop normalised as ``spec`` says, then its Gaussian maps
    (the spec's HeatmapCodec), both pooled."""
    image = spec.to_tensor(crop)[0]
    channels, size = image.shape[:2]
    small = image.reshape(channels, size // POOL, POOL, size // POOL, POOL).mean((2, 4))
    maps = HeatmapCodec.from_spec(spec).encode(points, pool=POOL)
    return np.concatenate([small, maps]).astype(np.float32)


def jitter_points(points: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """2D points as a 2D model would give them: per-point noise and a small global shift."""
    size = box_size(points)
    shift = rng.normal(0, noise * 0.5 * size, 2)
    return points + rng.normal(0, noise * size, points.shape) + shift


class DepthSet(torch.utils.data.Dataset):
    def __init__(
        self,
        faces: list[Face],
        prior: ShapePrior,
        crop: CropSettings,
        stats: dict,
        spec: ModelSpec,
        noise: float,
        seed: int,
    ) -> None:
        self.faces, self.prior, self.crop, self.stats = faces, prior, crop, stats
        self.spec, self.noise, self.seed, self.epoch = spec, noise, seed, 0

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        image, points, _ = make_crop(self.faces[index], self.crop, self.stats, rng, augment=True)
        z = depth_labels(self.prior, points)
        seen = jitter_points(points, rng, self.noise)
        x = pooled_input(image, seen, self.spec)
        return torch.from_numpy(x), torch.from_numpy(z)


def validation_set(
    faces: list[Face],
    prior: ShapePrior,
    crop: CropSettings,
    stats: dict,
    spec: ModelSpec,
    noise: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Detector-like crops without augmentation; 2D points jittered with a fixed seed."""
    rng = np.random.default_rng(seed + 1000)
    xs, zs, sizes = [], [], []
    for face in faces:
        image, matrix = validation_crop(face, crop, stats)
        points = transform_points(face.points, matrix)
        zs.append(depth_labels(prior, points))
        xs.append(pooled_input(image, jitter_points(points, rng, noise), spec))
        sizes.append(box_size(points))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(zs)), np.array(sizes)


def evaluate(net: DepthNet, x: torch.Tensor, z: torch.Tensor, sizes: np.ndarray) -> dict:
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net.forward_pooled(x[i : i + 64]) for i in range(0, len(x), 64)])
    net.train()
    pred = pred - pred.mean(1, keepdim=True)
    err = (pred - z).abs().mean(1).numpy() / sizes
    return {"z_err_mean": float(err.mean()), "z_err_median": float(np.median(err))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "300w")
    parser.add_argument("--prior", type=Path, default=DEFAULT_PRIOR)
    parser.add_argument("--out", type=Path, default=Path("models/depth_compact.onnx"))
    parser.add_argument("--workdir", type=Path, default=Path("training/runs/depth"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=2.0, help="Gaussian sigma, crop px")
    parser.add_argument("--noise", type=float, default=0.015, help="2D jitter, of box size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="use only N faces (smoke tests)")
    parser.add_argument("--val-every", type=float, default=180.0, help="seconds")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = RunLog(args.workdir / "log.jsonl")
    crop, stats, prior = CropSettings(), load_box_stats(), ShapePrior.load(args.prior)
    spec = depth_spec(crop, args.sigma)
    train_faces = load_folder(args.data / "train", args.limit, required=True)
    val_faces = load_folder(args.data / "val", args.limit, required=True)
    val = validation_set(val_faces, prior, crop, stats, spec, args.noise, args.seed)

    net = DepthNet(width=args.width)
    macs = count_macs(net, crop.size, 71)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    dataset = DepthSet(train_faces, prior, crop, stats, spec, args.noise, args.seed)
    steps_per_epoch = max(1, len(train_faces) // args.batch)
    total_steps = steps_per_epoch * args.epochs

    def lr_at(step: int) -> float:
        return args.lr * (
            0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_steps)))
        )

    loop = TrainLoop(net, optimizer, lr_at, log, args, saved_with={"config": net.config})
    if args.resume:
        loop.resume()

    def train_step(batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, z = batch
        pred = net.forward_pooled(x)
        loss = (pred - pred.mean(1, keepdim=True) - z).abs().mean()
        return loss, {"loss": round(float(loss), 4)}

    log(
        {
            "event": "start",
            "macs": macs,
            "params": sum(p.numel() for p in net.parameters()),
            "args": {k: str(v) for k, v in vars(args).items()},
        }
    )
    loader_args = {
        "batch_size": args.batch,
        "shuffle": True,
        "drop_last": len(train_faces) > args.batch,
    }
    # Stopped early, the network is still exported: a shorter run is still a model.
    loop.run(dataset, args.epochs, train_step, lambda: evaluate(net, *val), loader_args)
    result = evaluate(net, *val)
    log({"event": "final", "step": loop.step, "minutes": loop.minutes, **result})
    spec = dataclasses.replace(
        spec,
        extra=spec.extra
        | {
            "gmacs": round(macs / 1e9, 3),
            "architecture": net.config,
            "z_convention": "zero-mean per face, larger z = closer to the camera",
            "labels": "shape prior (AFLW2000-3D shapes) fitted to 300-W 2D annotations",
            "training_data": "300-W (AFW + HELEN train), research and non-commercial use only",
            "trained_by": "training/train_depth.py",
            "val_z_err_over_box": round(result["z_err_mean"], 5),
        },
    )
    export_onnx(net, args.out, spec, input_channels=71)
    log({"event": "exported", "path": str(args.out)})


if __name__ == "__main__":
    main()
