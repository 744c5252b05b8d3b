"""Train the embedded 2D FAN from scratch on 300-W, validate as it goes, export ONNX.

    python -m training.train_2d                      # the shipped model (fixed seed)
    python -m training.train_2d --epochs 1 --limit 16 --stacks 1 --channels 16  # smoke run

Writes checkpoints and a JSON-lines log to --workdir (resumable with --resume), and
the final network to --out as ONNX with its model spec in the metadata, calibrated on
the validation faces by training/calibrate.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.aflw import TRAIN_REPEATS, balanced, gt_box_size, real_faces
from training.calibrate import calibrate
from training.choose_presence import choose
from training.data import (
    DATA_ROOT,
    CropSettings,
    Face,
    load_box_stats,
    load_folder,
    make_crop,
    photometric,
    validation_crop,
)
from training.export import export_onnx
from training.from_onnx import load_checkpoint
from training.labels_3d import lift_to_3d
from training.loop import TrainLoop, initial_weights
from training.losses import adaptive_wing, foreground_weight, integral_loss, weighted_mse
from training.model import BLOCKS, FAN, LastStack, count_macs, widen_channels, widen_to_3d
from training.negatives import NegativeCrops
from training.paths import SHAPE_PRIOR_PATH
from training.runlog import RunLog
from training.synthesis import face_depths, random_total_turn, random_yaw, turn_face
from util.crop import invert_matrix, transform_points
from util.heatmap_codec import DECODINGS, HeatmapCodec
from util.landmarks import NUM_LANDMARKS, inter_ocular, nme
from util.runtime import ModelSpec
from util.shape_prior import ShapePrior, fit_to_2d, fit_yaw

SHAPE_PRIOR = SHAPE_PRIOR_PATH

HEATMAP_SIZE = 64  # the network's output: a quarter of the crop
# The centroid decoding keeps the mass within this many heatmap px of each map's
# maximum: chosen on 300w/val among none, 32, 24, 16 and 10 for the shipped model (none
# let stray blobs drag 6 faces past 8 % NME; 32 left 4 and the lowest failure rate).
CENTROID_RADIUS = 32


def landmark_spec(crop: CropSettings, sigma: float) -> ModelSpec:
    """The spec the 2D model is trained for and exported with (the results of the run
    are added at export): its crop, its heatmaps, their Gaussian (``sigma`` heatmap px)
    and the input convention, ModelSpec's default (RGB, 0-1, NCHW) as FAN's."""
    return ModelSpec(
        kind="fan2d",
        input_size=(crop.size, crop.size),
        extra={
            "heatmap_size": HEATMAP_SIZE,
            "crop_scale": crop.scale,
            "crop_shift_y": crop.shift_y,
            "heatmap_sigma": sigma,
            "centroid_radius": CENTROID_RADIUS,
        },
    )


class TrainSet(torch.utils.data.Dataset):
    """Augmented face crops, then ``negative_share`` as many non-face crops (label 0,
    zero maps: they train only the presence output). Crops are normalised and targets
    made as ``spec`` says (``ModelSpec.to_tensor``, ``HeatmapCodec.encode``).

    With ``labels_3d`` each face also has its 3D-convention landmarks (maps 68-135),
    and ``wide_share`` of the turned faces turn up to ``most_3d`` degrees (with
    ``wide_total``: to a total yaw drawn uniformly from 30 to ``most_3d`` degrees,
    ``random_total_turn``); the 2D maps of faces turned more than ``most_2d`` are not
    trained (the re-rendering smears there, and the 2D convention's outline with it)."""

    def __init__(
        self,
        faces: list[Face],
        crop: CropSettings,
        stats: dict,
        spec: ModelSpec,
        seed: int,
        negative_share: float = 0.0,
        turn_share: float = 0.0,
        turned_negatives: float = 0.0,
        labels_3d: bool = False,
        most_2d: float = 45.0,
        most_3d: float = 75.0,
        wide_share: float = 0.5,
        wide_total: bool = False,
        real_3d: tuple[list[Face], np.ndarray] | None = None,
    ) -> None:
        """``real_3d``: (faces, their (N, 68, 3) 3D-convention labels) of real faces
        that train the 3D maps only (AFLW2000-3D, training/aflw.py), as they are: no
        synthesized turn, their 2D maps untrained (their labels are the 3D convention's)."""
        self.faces, self.crop, self.stats, self.seed = faces, crop, stats, seed
        self.spec, self.codec = spec, HeatmapCodec.from_spec(spec)
        self.negatives = (
            NegativeCrops(faces, crop.size).with_turned_faces(turned_negatives)
            if negative_share > 0
            else None
        )
        # Depth of every face from the shape prior, for the out-of-plane turns.
        self.turn_share, self.most_2d, self.most_3d = turn_share, most_2d, most_3d
        self.wide_share = wide_share
        prior = ShapePrior.load(SHAPE_PRIOR)
        points = np.stack([f.points for f in faces])
        self.depths = face_depths(prior, points) if turn_share > 0 else None
        self.points_3d = lift_to_3d(prior, points) if labels_3d else None
        # Each face's own yaw, for turns to a total yaw.
        self.yaws = fit_yaw(fit_to_2d(prior, points).rotation) if wide_total else None
        self.maps = 2 * NUM_LANDMARKS if labels_3d else NUM_LANDMARKS
        self.n_negatives = round(negative_share * len(faces)) if self.negatives else 0
        self.real_faces, self.real_points = real_3d if real_3d is not None else ([], None)
        if self.real_faces and not labels_3d:
            raise ValueError("real 3D faces train the 3D maps: labels_3d is needed")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.faces) + self.n_negatives + len(self.real_faces)

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crop, target maps, targets in heatmap px, is a face, train the 2D maps)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        train_2d = 1.0
        real = index - len(self.faces) - self.n_negatives
        if real >= 0:
            image, points, points_3d = make_crop(
                self.real_faces[real], self.crop, self.stats, rng, augment=True,
                carry=self.real_points[real, :, :2],
            )  # fmt: skip
            points = np.concatenate([points, points_3d])
            hm_points = self.codec.to_heatmap(points)
            target, is_face, train_2d = self.codec.encode(points), 1.0, 0.0
        elif index >= len(self.faces):
            image = self.negatives(rng)
            image = photometric(image, rng)
            size = self.codec.heatmap_size
            target = np.zeros((self.maps, size, size), np.float32)
            hm_points, is_face = np.zeros((self.maps, 2), np.float32), 0.0
        else:
            face = self.faces[index]
            carry = None if self.points_3d is None else self.points_3d[index]
            if self.depths is not None and rng.random() < self.turn_share:
                wide = self.points_3d is not None and rng.random() < self.wide_share
                if wide and self.yaws is not None:
                    yaw = random_total_turn(float(self.yaws[index]), rng, most=self.most_3d)
                else:
                    yaw = random_yaw(face.points, rng, self.most_3d if wide else self.most_2d)
                turned, labels, carry = turn_face(
                    face.image, face.points, self.depths[index], yaw, carry
                )
                face = Face(face.name, turned, labels)
                train_2d = float(abs(yaw) <= self.most_2d)
            image, points, points_3d = make_crop(
                face, self.crop, self.stats, rng, augment=True,
                carry=None if carry is None else carry[:, :2],
            )  # fmt: skip
            if points_3d is not None:
                points = np.concatenate([points, points_3d])
            hm_points = self.codec.to_heatmap(points)
            target, is_face = self.codec.encode(points), 1.0
        return (
            torch.from_numpy(self.spec.to_tensor(image)[0]),
            torch.from_numpy(target),
            torch.from_numpy(hm_points.astype(np.float32)),
            torch.tensor(is_face),
            torch.tensor(train_2d),
        )


def validation_crops(
    faces: list[Face], crop: CropSettings, stats: dict, spec: ModelSpec
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Detector-like crops without jitter (normalised as ``spec`` says), with the
    matrices to map results back."""
    images, inverses = [], []
    for face in faces:
        image, matrix = validation_crop(face, crop, stats)
        images.append(image)
        inverses.append(invert_matrix(matrix))
    return torch.from_numpy(spec.to_batch(images)), inverses


def last_stack_maps(net: FAN, x: torch.Tensor, batch: int = 16) -> Iterator[tuple[int, np.ndarray]]:
    """(index, the last stack's maps) of each crop of ``x``, run in batches with the
    network in eval mode (its mode is restored afterwards)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                crops = x[start : start + batch].contiguous(memory_format=torch.channels_last)
                for k, maps in enumerate(net(crops)[-1].numpy()):
                    yield start + k, maps
    finally:
        net.train(was_training)


def evaluate(
    net: FAN,
    x: torch.Tensor,
    inverses: list,
    faces: list[Face],
    codec: HeatmapCodec,
    points_3d: np.ndarray | None = None,
) -> dict:
    """Validation NME (inter-ocular) with each decoding the tool offers: the refined
    heatmap peak ("dark") and the positive centroid the integral loss trains; with
    ``points_3d``, also the 3D maps' centroid NME against those (lifted) labels."""
    errors: dict[str, list[float]] = {method: [] for method in DECODINGS}
    errors_3d = []
    # Each decoding on the whole map (no centroid radius), as every run has logged it.
    decoders = {
        method: dataclasses.replace(codec, method=method, centroid_radius=None)
        for method in DECODINGS
    }
    for i, maps in last_stack_maps(net, x):
        iod = inter_ocular(faces[i].points)
        for method, decoder in decoders.items():
            pts = transform_points(decoder.decode(maps[:NUM_LANDMARKS])[0], inverses[i])
            errors[method].append(nme(pts, faces[i].points, iod))
        if points_3d is not None:
            in_crop, _ = decoders["centroid"].decode(maps[NUM_LANDMARKS:])
            errors_3d.append(nme(transform_points(in_crop, inverses[i]),
                                 points_3d[i, :, :2], iod))  # fmt: skip
    result = {}
    for method, values in errors.items():
        values = np.array(values)
        prefix = "" if method == "dark" else f"{method}_"
        result |= {
            f"{prefix}nme_mean": float(values.mean()),
            f"{prefix}nme_median": float(np.median(values)),
            f"{prefix}fail_8": float((values > 0.08).mean()),
        }
    best = min(DECODINGS, key=lambda m: result["nme_mean" if m == "dark" else f"{m}_nme_mean"])
    if errors_3d:
        result["nme_3d_mean"] = float(np.mean(errors_3d))
    return result | {"best_decode": best}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "300w")
    parser.add_argument("--out", type=Path, default=Path("models/fan2d_compact.onnx"))
    parser.add_argument("--workdir", type=Path, default=Path("training/runs/fan2d"))
    parser.add_argument("--epochs", type=int, default=80, help="all epochs, both cycles")
    parser.add_argument(
        "--first-cycle-epochs",
        type=int,
        default=56,
        help="epochs of the first cosine cycle; the rest is a warm restart",
    )
    parser.add_argument(
        "--restart-lr",
        type=float,
        default=0.3,
        help="peak learning rate of the warm restart, relative to --lr",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stacks", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument(
        "--block",
        choices=sorted(BLOCKS),
        default="post",
        help="post-activated and plain blocks fold every BatchNorm into its convolution; "
        "plain: one wide conv per block (faster in int8; learnt slower: "
        "training/runs/fan_plain1)",
    )
    parser.add_argument(
        "--negatives",
        type=float,
        default=0.15,
        help="non-face crops per face crop, for the presence output (0 = no presence head)",
    )
    parser.add_argument("--presence-weight", type=float, default=0.1)
    parser.add_argument(
        "--turn",
        type=float,
        default=0.3,
        help="share of face crops turned out of plane by training/synthesis.py",
    )
    parser.add_argument(
        "--turned-negatives",
        type=float,
        default=0.0,
        help="share of the non-face crops that are faces turned 110-250 deg in the image",
    )
    parser.add_argument(
        "--out-3d",
        type=Path,
        default=None,
        help="also train 3D-convention maps (training/labels_3d.py) on the same trunk, "
        "and export them here (e.g. models/fan3d_compact.onnx)",
    )
    parser.add_argument(
        "--most-3d", type=float, default=75.0, help="largest synthesized turn for the 3D maps"
    )
    parser.add_argument(
        "--wide-share",
        type=float,
        default=0.5,
        help="share of the turned faces turned for the 3D maps (up to --most-3d)",
    )
    parser.add_argument(
        "--wide-total",
        action="store_true",
        help="turn those to a total yaw drawn uniformly from 30 deg to --most-3d "
        "(default: a turn as for the 2D maps, fewer past 60 deg in total)",
    )
    parser.add_argument(
        "--real-3d",
        action="store_true",
        help="with --out-3d: the 3D maps also learn from the real AFLW2000-3D training "
        "faces (training/aflw.py's split, each |yaw| bin repeated as TRAIN_REPEATS says), "
        "and the run validates on its validation faces too",
    )
    parser.add_argument(
        "--real-3d-records",
        type=Path,
        default=None,
        help="the CLI's JSON Lines of the AFLW images (evaluate_aflw --part all --json): "
        "the real faces' crops are placed on these 2D landmarks, as at run time",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this checkpoint's network, or from one of our fp32 FAN files "
        "(models/fan2d_compact.onnx: training/from_onnx.py); a 2D-only one is widened for "
        "--out-3d, a narrower one to --channels",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="distil from this checkpoint's (or fp32 FAN file's) network (e.g. a wider "
        "one): each face's heatmap targets become a blend of the labels' and the "
        "teacher's last-stack maps",
    )
    parser.add_argument(
        "--teacher-share",
        type=float,
        default=0.5,
        help="share of the teacher's maps in the blended targets",
    )
    parser.add_argument("--sigma", type=float, default=1.5, help="heatmap Gaussian, heatmap px")
    parser.add_argument("--loss", choices=["awing", "mse"], default="awing")
    parser.add_argument("--integral-weight", type=float, default=0.05)
    parser.add_argument(
        "--average-decay",
        type=float,
        default=0.0,
        help="validate and export an exponential moving average of the weights with this "
        "decay per step (e.g. 0.998; 0 = the raw weights)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only N faces (smoke tests)")
    parser.add_argument("--val-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="export the checkpoint in --workdir without training",
    )
    return parser


@dataclass
class RunData:
    """The faces of a run: 300-W's training and validation faces, their validation
    crops and 3D labels, and (``--real-3d``) the real AFLW2000-3D faces."""

    train_faces: list
    val_faces: list
    val_x: torch.Tensor
    val_inv: list
    val_3d: np.ndarray | None
    real_3d: tuple[list, np.ndarray] | None
    real_val: tuple | None


def load_run_data(
    args: argparse.Namespace, crop: CropSettings, stats: dict, spec: ModelSpec
) -> RunData:
    train_faces = load_folder(args.data / "train", args.limit, required=True)
    val_faces = load_folder(args.data / "val", args.limit, required=True)
    print(f"train {len(train_faces)} faces, val {len(val_faces)} faces", flush=True)
    val_x, val_inv = validation_crops(val_faces, crop, stats, spec)
    with_3d = args.out_3d is not None
    val_3d = (
        lift_to_3d(ShapePrior.load(SHAPE_PRIOR), np.stack([f.points for f in val_faces]))
        if with_3d
        else None
    )
    real_3d, real_val = None, None
    if args.real_3d:
        if not with_3d:
            raise SystemExit("--real-3d trains the 3D maps: give --out-3d")
        faces_3d, points_3d, bins = real_faces("train", args.real_3d_records)
        repeat = np.repeat(np.arange(len(faces_3d)), np.asarray(TRAIN_REPEATS)[bins])
        real_3d = ([faces_3d[i] for i in repeat], points_3d[repeat])
        faces_3d, points_3d, bins = real_faces("val", args.real_3d_records)
        real_val = (*validation_crops(faces_3d, crop, stats, spec), points_3d, bins)
        print(f"real 3D faces: {len(repeat)} training crops, {len(faces_3d)} val", flush=True)
    return RunData(train_faces, val_faces, val_x, val_inv, val_3d, real_3d, real_val)


def build_network(args: argparse.Namespace) -> FAN:
    """The network, from --init's weights when given (widened to 3D maps or to more
    channels as the run asks)."""
    with_3d = args.out_3d is not None
    net = FAN(
        args.stacks,
        args.channels,
        block=args.block,
        presence=args.negatives > 0,
        landmarks_3d=NUM_LANDMARKS if with_3d else 0,
    )
    if args.init is not None and not args.resume:
        checkpoint = load_checkpoint(args.init)
        state = initial_weights(checkpoint)
        if with_3d and state["heads.0.weight"].shape[0] == NUM_LANDMARKS:
            widen_to_3d(state, net)
        elif checkpoint["config"]["channels"] != args.channels:
            net = widen_channels(checkpoint_network(checkpoint), args.channels, args.seed)
        else:
            net.load_state_dict(state)
        print(f"initialised from {args.init}", flush=True)
    return net


def learning_rate(args: argparse.Namespace, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate at each step: two cosine cycles, the first from scratch, then a
    warm restart at a lower peak (measured: the first cycle ended still improving, 4.6
    -> 4.3 % in its last epochs)."""
    first_cycle = min(args.epochs, args.first_cycle_epochs or args.epochs)
    cycle_1 = steps_per_epoch * first_cycle
    cycle_2 = steps_per_epoch * (args.epochs - first_cycle)
    warmup = min(300, cycle_1 // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        if step < cycle_1:
            progress = (step - warmup) / max(1, cycle_1 - warmup)
            peak = args.lr
        else:
            progress = min(1.0, (step - cycle_1) / max(1, cycle_2))
            peak = args.lr * args.restart_lr
        return args.lr * 0.01 + (peak - args.lr * 0.01) * 0.5 * (1 + math.cos(math.pi * progress))

    return lr_at


def make_train_step(
    net: FAN, teacher: FAN | None, args: argparse.Namespace
) -> Callable[[list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """One batch's loss: heatmaps (2D, and 3D with --out-3d), the integral coordinates
    and presence."""
    with_3d = args.out_3d is not None

    def train_step(batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, target, points, is_face, train_2d = batch
        x = x.contiguous(memory_format=torch.channels_last)
        outputs, logit = net.forward_all(x)
        # Heatmap losses on the faces only; non-faces train the presence output.
        faces = is_face > 0.5
        outputs, target, points = [o[faces] for o in outputs], target[faces], points[faces]
        if teacher is not None:
            with torch.no_grad():
                taught = teacher.forward_all(x[faces])[0][-1][:, : target.shape[1]].clamp(0.0, 1.0)
            target = (1.0 - args.teacher_share) * target + args.teacher_share * taught
        weight = foreground_weight(target)
        # The 2D maps of faces turned past --most-3d's 2D limit are not trained.
        keep = train_2d[faces] > 0.5
        parts = [(keep, slice(0, NUM_LANDMARKS))]
        parts += [(slice(None), slice(NUM_LANDMARKS, None))] if with_3d else []
        heat_loss = sum(
            (adaptive_wing if args.loss == "awing" else weighted_mse)(
                o[rows, maps], target[rows, maps], weight[rows, maps]
            )
            for o in outputs
            for rows, maps in parts
        )
        coord_loss = (
            sum(integral_loss(outputs[-1][rows, maps], points[rows, maps])
                for rows, maps in parts)  # fmt: skip
            if args.integral_weight > 0
            else torch.zeros(())
        )
        presence_loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logit, is_face)
            if logit is not None
            else torch.zeros(())
        )
        loss = heat_loss + args.integral_weight * coord_loss + args.presence_weight * presence_loss
        return loss, {
            "loss": round(loss.item(), 5),
            "heat": round(heat_loss.item(), 5),
            "coord": round(coord_loss.item(), 4),
            "presence": round(presence_loss.item(), 4),
        }

    return train_step


def export_run(
    loop: TrainLoop,
    net: FAN,
    spec: ModelSpec,
    result: dict,
    macs: int,
    args: argparse.Namespace,
    data: RunData,
    dataset: TrainSet,
    log: RunLog,
) -> None:
    """The trained network to --out (and --out-3d) with its spec, its landmark offsets
    measured on held-out faces, and its presence thresholds."""
    spec = dataclasses.replace(
        spec,
        extra=spec.extra
        | {
            # Chosen on the validation set between the two decodings (both logged).
            "decode": result["best_decode"],
            "architecture": net.config,
            "gmacs": round(macs / 1e9, 3),
            "trained_by": "training/train_2d.py",
            "training_data": "300-W (AFW + HELEN train + LFPW train, 0-based labels), "
            "research and non-commercial use only",
            "outputs": ["heatmaps", "presence"] if net.presence is not None else ["heatmaps"],
            "val_nme_interocular": round(
                result["nme_mean" if result["best_decode"] == "dark" else "centroid_nme_mean"], 5
            ),
        },
    )
    export_onnx(
        LastStack(loop.trained),
        args.out,
        spec,
        output_name=["heatmaps", "presence"] if net.presence is not None else "heatmaps",
    )
    log({"event": "exported", "path": str(args.out)})
    # The per-landmark bias on faces it has not seen (calibrate.py: on its training faces
    # the network hides it), stored in the model.
    source = f"faces of {args.data.name}/val (held out)"
    offsets = calibrate(
        args.out, data.val_faces, threads=args.threads, progress=False, source=source
    )
    log({"event": "calibrated", "mean_offset_xy": offsets.mean(0).round(4).tolist()})
    if args.out_3d is not None:
        export_3d(
            loop.trained, spec, args.out_3d, result, data.train_faces, dataset.points_3d,
            args.threads,
        )  # fmt: skip
        log({"event": "exported", "path": str(args.out_3d)})
    if net.presence is not None:
        # The presence and detector thresholds, chosen on the validation faces.
        chosen = choose(args.out, args.data / "val", threads=args.threads, limit=args.limit)
        log({"event": "presence", **(chosen or {})})


def main() -> None:
    """parse -> data -> network -> train (validating as it goes) -> export."""
    args = build_parser().parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = RunLog(args.workdir / "log.jsonl")
    crop, stats = CropSettings(), load_box_stats()
    spec = landmark_spec(crop, args.sigma)
    codec = HeatmapCodec.from_spec(spec)
    data = load_run_data(args, crop, stats, spec)

    net = build_network(args)
    macs = count_macs(net)
    net = net.to(memory_format=torch.channels_last)
    teacher = load_teacher(args.teacher, net) if args.teacher is not None else None
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    dataset = TrainSet(
        data.train_faces,
        crop,
        stats,
        spec,
        args.seed,
        args.negatives,
        args.turn,
        turned_negatives=args.turned_negatives,
        labels_3d=args.out_3d is not None,
        most_3d=args.most_3d,
        wide_share=args.wide_share,
        wide_total=args.wide_total,
        real_3d=data.real_3d,
    )
    loader_args = {
        "batch_size": args.batch,
        "shuffle": True,
        "drop_last": len(dataset) > args.batch,
        "num_workers": args.workers,
    }
    steps_per_epoch = max(1, len(dataset) // args.batch)
    loop = TrainLoop(
        net,
        optimizer,
        learning_rate(args, steps_per_epoch),
        log,
        args,
        saved_with={
            "config": net.config,
            "args": vars(args)
            | {"data": str(args.data), "out": str(args.out), "workdir": str(args.workdir)},
        },
        average_decay=args.average_decay,
    )
    if args.resume or args.export_only:
        loop.resume()

    def validate() -> dict:
        result = evaluate(loop.trained, data.val_x, data.val_inv, data.val_faces, codec,
                          data.val_3d)  # fmt: skip
        if data.real_val is not None:
            result |= evaluate_real_3d(loop.trained, *data.real_val, codec)
        return result

    log(
        {
            "event": "start",
            "macs": macs,
            "params": sum(p.numel() for p in net.parameters()),
            "args": {k: str(v) for k, v in vars(args).items()},
            "box_stats": stats,
        }
    )
    epochs = 0 if args.export_only else args.epochs
    train_step = make_train_step(net, teacher, args)
    if not loop.run(dataset, epochs, train_step, validate, loader_args):
        return
    result = validate()
    log({"event": "final", "step": loop.step, "minutes": loop.minutes, **result})
    export_run(loop, net, spec, result, macs, args, data, dataset, log)


def evaluate_real_3d(
    net: FAN,
    x: torch.Tensor,
    inverses: list,
    points_3d: np.ndarray,
    bins: np.ndarray,
    codec: HeatmapCodec,
) -> dict:
    """The 3D maps' x, y NME over sqrt(w * h) of the labels' box (the AFLW2000-3D
    benchmark's), by |yaw| bin and balanced, on crops placed as validation_crops does."""
    decoder = dataclasses.replace(codec, method="centroid", centroid_radius=None)
    errors = []
    for i, maps in last_stack_maps(net, x):
        pts = transform_points(decoder.decode(maps[NUM_LANDMARKS:])[0], inverses[i])
        gt = points_3d[i]
        errors.append(nme(pts, gt, float(gt_box_size(gt))))
    per_bin, mean = balanced(np.array(errors), bins)
    return {"aflw_3d_nme_bins": [round(v, 5) for v in per_bin], "aflw_3d_nme": round(mean, 5)}


def checkpoint_network(checkpoint: dict) -> FAN:
    """The network a checkpoint holds (its initial_weights), built from its config."""
    net = FAN(**checkpoint["config"])
    net.load_state_dict(initial_weights(checkpoint))
    return net


def load_teacher(path: Path, student: FAN) -> FAN:
    """The network of a checkpoint (or of our fp32 FAN file), frozen in eval mode, to
    distil from; it must give the student's maps (2D, and 3D when the student has
    them): its first maps teach the student's, a 2D-only student takes the 2D ones."""
    checkpoint = load_checkpoint(path)
    teacher = checkpoint_network(checkpoint)
    wanted, given = student.heads[-1].out_channels, teacher.heads[-1].out_channels
    if given < wanted:
        raise SystemExit(f"{path}: the teacher gives {given} maps, the student {wanted}")
    copied = checkpoint.get("copied_maps")  # an ONNX file holds one part's maps
    if copied == "2d" or (copied == "3d" and wanted > student.landmarks):
        raise SystemExit(f"{path}: holds no {copied.upper()} maps to teach (copies only)")
    teacher = teacher.eval().to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    print(f"distilling from {path} ({checkpoint['config']})", flush=True)
    return teacher


# The shape fit that gives z from the 3D model's points keeps this close to the prior
# (util.depth.ShapeFitDepth): chosen with python -m training.evaluate_3d --limit 60 on
# version 4, z by yaw bin 3.48 / 5.31 / 10.70 % at 1, 3.06 / 4.38 / 9.50 % at 10, and
# 3.09 / 4.26 / 9.33 % at 30 (where noise-free points lose more).
SHAPE_FIT_REGULARISER = 10.0
# ... and fits again, keeping closer to the prior, a face it finds turned 30 deg or more,
# whose points err together: measured on version 6 (evaluate_3d --limit 100), z 4.09 ->
# 3.97 % at 30-60 deg and 9.30 -> 8.97 % at 60-90; on AFLW2000-3D's real shapes with its
# errors (evaluate_shape_fit --errors), 3.44 -> 3.35 % weighted.
SHAPE_FIT_TURNED = {"from_yaw": 30.0, "regulariser": 100.0}
# ... and from 40 deg takes the far half's x, y and all z from the prior fitted to the
# near half (the 3D maps draw a profile's hidden half as on a face turned 20-30 deg
# less): chosen on val faces 0-99 with version 6 (evaluate_3d --limit 100; 35 / 40 / 45
# deg, regulariser 10 / 30 / 100), then checked on faces 100-290: x, y 8.88 -> 7.27 %
# and z 8.44 -> 5.68 % at 60-90 deg, 3.94 -> 3.76 and 3.83 -> 3.35 % at 30-60.
SHAPE_FIT_FAR_SIDE = {"from_yaw": 40.0, "regulariser": 30.0}


def export_3d(
    net: FAN,
    spec_2d: ModelSpec,
    out: Path,
    result: dict,
    faces: list[Face],
    points_3d: np.ndarray,
    threads: int,
) -> None:
    """The 3D-convention maps as their own model (3DFAN-4's contract: heatmaps only),
    calibrated like the 2D one, on the training faces' lifted labels."""
    extra = {
        k: v
        for k, v in spec_2d.extra.items()
        if k not in ("outputs", "val_nme_interocular", "presence_threshold")
    }
    extra |= {
        "outputs": ["heatmaps"],
        "convention": "3D: projections of the 3D landmarks (3DFAN-4's), "
        "from 300-W labels lifted by training/labels_3d.py",
        "val_nme_interocular_lifted": round(result.get("nme_3d_mean", float("nan")), 5),
        # The 3D maps were validated with the centroid decoding only.
        "decode": "centroid",
        "shape_fit_regulariser": SHAPE_FIT_REGULARISER,
        "shape_fit_turned": SHAPE_FIT_TURNED,
        "shape_fit_far_side": SHAPE_FIT_FAR_SIDE,
    }
    export_onnx(LastStack(net, "3d"), out, dataclasses.replace(spec_2d, kind="fan3d", extra=extra),
                output_name="heatmaps")  # fmt: skip
    lifted = [
        Face(f.name, f.image, p[:, :2].astype(np.float32))
        for f, p in zip(faces, points_3d, strict=True)
    ]
    calibrate(out, lifted, threads=threads, progress=False)


if __name__ == "__main__":
    main()
