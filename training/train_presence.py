"""Retrain only the face-presence head of a shipped 2D model, so that it takes real
profiles for faces; the network's maps (and so every landmark) stay bit-identical.

    python -m training.train_presence --records training/runs/fan_v13/aflw_records.jsonl
    python -m training.train_presence ... --write    # put the new head into models/

The head (util/landmark_stage.py reads its output) is a small MLP on the last stack's
pooled features and the 68 maps' peaks; in both the fp32 and the int8 file its weights
are fp32 initializers of two Gemm nodes. So its input is read out of each file as it
runs (onnxruntime, the Gemm's input added as an output), the MLP is trained on those
features in torch, and its weights are written into both files: one head for both.

Faces: the 300-W training faces and the AFLW2000-3D training faces (training/aflw.py's
split, each |yaw| bin repeated as TRAIN_REPEATS says), cropped as training crops are
(training/data.py make_crop: detector-like boxes, a residual roll, photometric
changes); non-faces: training/negatives.py's crops, faces turned 110-250 deg among
them. Validation: the 300w/val faces, the AFLW validation faces and other non-faces.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.aflw import TRAIN_REPEATS, real_faces
from training.data import CropSettings, load_box_stats, load_folder, make_crop, validation_crop
from training.negatives import NegativeCrops
from training.paths import DATA_300W, MODELS_DIR
from util.runtime import read_spec

MODELS = (MODELS_DIR / "fan2d_compact.onnx", MODELS_DIR / "fan2d_compact.int8.onnx")
FIRST, SECOND = "net.presence.0", "net.presence.2"


def feature_session(path: Path, threads: int) -> tuple[ort.InferenceSession, str]:
    """A session of the model that also outputs the presence head's input."""
    model = onnx.load(str(path))
    node = next(
        n for n in model.graph.node if n.op_type == "Gemm" and n.input[1] == f"{FIRST}.weight"
    )
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.input[0]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session, node.input[0]


def features(path: Path, crops: list[np.ndarray], threads: int) -> np.ndarray:
    """(N, D) presence-head inputs of uint8 RGB crops."""
    session, name = feature_session(path, threads)
    spec = read_spec(path)
    out = []
    for start in range(0, len(crops), 8):
        batch = spec.to_batch(crops[start : start + 8])
        out.append(session.run([name], {session.get_inputs()[0].name: batch})[0])
    return np.concatenate(out).reshape(len(crops), -1)


def head_weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {
        i.name: onnx.numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.name.startswith(("net.presence.",))
    }


def write_head(path: Path, out: Path, weights: dict[str, np.ndarray]) -> None:
    """Copy ``path`` to ``out`` with the head's initializers replaced (the rest, its
    metadata included, as it was)."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name in weights:
            init.CopyFrom(
                onnx.numpy_helper.from_array(weights[init.name].astype(np.float32), init.name)
            )
    tmp = out.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(out)


class Head(torch.nn.Module):
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        w1 = torch.from_numpy(weights[f"{FIRST}.weight"].copy())
        w2 = torch.from_numpy(weights[f"{SECOND}.weight"].copy())
        self.first = torch.nn.Linear(w1.shape[1], w1.shape[0])
        self.second = torch.nn.Linear(w2.shape[1], w2.shape[0])
        with torch.no_grad():
            self.first.weight.copy_(w1)
            self.first.bias.copy_(torch.from_numpy(weights[f"{FIRST}.bias"].copy()))
            self.second.weight.copy_(w2)
            self.second.bias.copy_(torch.from_numpy(weights[f"{SECOND}.bias"].copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))[:, 0]

    def weights(self) -> dict[str, np.ndarray]:
        return {
            f"{FIRST}.weight": self.first.weight.detach().numpy(),
            f"{FIRST}.bias": self.first.bias.detach().numpy(),
            f"{SECOND}.weight": self.second.weight.detach().numpy(),
            f"{SECOND}.bias": self.second.bias.detach().numpy(),
        }


def crops_of(faces: list, repeats: np.ndarray, negatives: int, seed: int,
             augment: bool) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """(crops, labels): each face ``repeats`` times, then ``negatives`` non-faces."""
    crop, stats = CropSettings(), load_box_stats()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for face, count in zip(faces, repeats, strict=True):
        for _ in range(int(count)):
            if augment:
                images.append(make_crop(face, crop, stats, rng, augment=True)[0])
            else:
                images.append(validation_crop(face, crop, stats)[0])
            labels.append(1.0)
    source = NegativeCrops(faces, crop.size).with_turned_faces(0.25)
    for _ in range(negatives):
        images.append(source(rng))
        labels.append(0.0)
    return images, np.array(labels, np.float32)


def report(name: str, probability: np.ndarray, labels: np.ndarray, groups: dict) -> None:
    line = [f"{name}:"]
    for group, mask in groups.items():
        p = probability[mask]
        wanted = labels[mask][0] > 0.5
        share = (p >= 0.5).mean() if wanted else (p < 0.5).mean()
        line.append(f"{group} {share:.1%} right")
    print("  ".join(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records",
        type=Path,
        required=True,
        help="the CLI's JSON Lines of the AFLW images (training/aflw.real_faces)",
    )
    parser.add_argument("--out", type=Path, default=Path("training/runs/presence"))
    parser.add_argument("--rounds", type=int, default=2, help="crops of each 300-W face")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="replace the heads in models/")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train_300w = load_folder(DATA_300W / "train", required=True)
    aflw, _, bins = real_faces("train", args.records)
    faces = train_300w + aflw
    repeats = np.r_[np.full(len(train_300w), args.rounds), np.asarray(TRAIN_REPEATS)[bins]]
    crops, labels = crops_of(faces, repeats, int(repeats.sum()), args.seed, augment=True)
    val_300w = load_folder(DATA_300W / "val", required=True)
    val_aflw, _, val_bins = real_faces("val", args.records)
    val_crops, val_labels = crops_of(val_300w + val_aflw, np.ones(len(val_300w) + len(val_aflw)),
                                     1000, args.seed + 1, augment=False)  # fmt: skip
    n3, na = len(val_300w), len(val_aflw)
    profiles = np.zeros(len(val_labels), bool)
    profiles[n3 : n3 + na] = val_bins == 2
    groups = {
        "300w/val": np.arange(len(val_labels)) < n3,
        "AFLW val": (np.arange(len(val_labels)) >= n3) & (val_labels > 0.5),
        "AFLW val 60-90": profiles,
        "non-faces": val_labels < 0.5,
    }
    print(f"{len(crops)} training crops, {len(val_crops)} validation crops", flush=True)

    x = np.concatenate([features(m, crops, args.threads) for m in MODELS])
    y = np.concatenate([labels] * len(MODELS))
    vx = [features(m, val_crops, args.threads) for m in MODELS]
    weights = head_weights(MODELS[0])
    head = Head(weights)
    for model, feats in zip(MODELS, vx, strict=True):
        with torch.no_grad():
            p = torch.sigmoid(head(torch.from_numpy(feats))).numpy()
        report(f"before, {model.name}", p, val_labels, groups)

    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _epoch in range(args.epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 256):
            idx = order[start : start + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for model, feats in zip(MODELS, vx, strict=True):
        with torch.no_grad():
            p = torch.sigmoid(head(torch.from_numpy(feats))).numpy()
        report(f"after, {model.name}", p, val_labels, groups)

    for model in MODELS:
        out = args.out / model.name
        write_head(model, out, head.weights())
        print(f"wrote {out}")
        if args.write:
            shutil.copyfile(out, model)
            print(f"replaced {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
