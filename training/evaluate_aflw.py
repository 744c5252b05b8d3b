"""Score the tool on the AFLW2000-3D dev half, end to end through the command line, as
the sealed half is scored (training/aflw.py has the split and the scoring rules).

    python -m training.evaluate_aflw                       # validation faces, default models
    python -m training.evaluate_aflw --part all --json runs.jsonl   # keep the records
    python -m training.evaluate_aflw --from-json runs.jsonl         # score records again
    python -m training.evaluate_aflw -- --model-3d PATH    # after --: options for the CLI

Reports, by |yaw| bin and balanced over the bins: the NME of ``landmarks_3d``'s x, y
(and of ``landmarks``, the 2D convention, for reference), the z error (mean absolute,
over the same box; both z zero-mean per face), z with each face's best linear tilt of
the error taken out (what is left when the head pose is right), the misses (no face
found over the labelled one), and the head-pose MAE (yaw, pitch, roll in degrees, over
faces with every |angle| <= 99 deg, as head-pose papers count).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.aflw import (
    POSE_RANGE,
    YAW_BINS,
    AflwLabels,
    balanced,
    gt_box_size,
    nearest_face,
    pose_mae,
    split,
)
from training.paths import REPO
from util.landmarks import nme


def run_cli(labels: AflwLabels, out: Path, cli_args: list[str], threads: int) -> None:
    """The CLI over the faces' images, JSON Lines to ``out``."""
    paths = [str(labels.image_path(i)) for i in range(len(labels))]
    command = [sys.executable, str(REPO / "face_alignment.py"), "-i", *paths, "--active-3d",
               "--json", str(out), "-q", "--threads", str(threads), *cli_args]  # fmt: skip
    subprocess.run(command, check=True)


def read_records(path: Path) -> dict[str, dict]:
    """{image stem: record} of a JSON Lines file."""
    records = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            records[Path(record["image"]).stem] = record
    return records


def match_face(record: dict | None, gt: np.ndarray) -> dict | None:
    """The record's face over the labelled one (``nearest_face``, by the centre of its 3D
    points, or of its 2D points without them); None when none is."""
    if record is None or not record.get("faces"):
        return None
    centres = [
        np.asarray(face.get("landmarks_3d") or face["landmarks"], np.float64)[:, :2].mean(0)
        for face in record["faces"]
    ]
    k = nearest_face(centres, gt)
    return None if k is None else record["faces"][k]


def detilted(error: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``error`` (68,) less its least-squares plane a*x + b*y + c over the points."""
    design = np.column_stack([xy, np.ones(len(xy))])
    coefficients, *_ = np.linalg.lstsq(design, error, rcond=None)
    return error - design @ coefficients


def score(labels: AflwLabels, records: dict[str, dict]) -> dict:
    """Per-face errors and the summary (see the module docstring)."""
    n = len(labels)
    nme_3d, nme_2d, z_err, z_flat = (np.full(n, np.nan) for _ in range(4))
    pose = np.full((n, 3), np.nan)
    for i in range(n):
        gt = labels.pt3d[i]
        face = match_face(records.get(labels.names[i]), gt)
        if face is None:
            continue
        box = float(gt_box_size(gt))
        if face.get("landmarks_3d") is not None:
            p3 = np.asarray(face["landmarks_3d"], np.float64)
            nme_3d[i] = nme(p3, gt, box)
            error = (p3[:, 2] - p3[:, 2].mean()) - (gt[:, 2] - gt[:, 2].mean())
            z_err[i] = np.abs(error).mean() / box
            z_flat[i] = np.abs(detilted(error, gt[:, :2])).mean() / box
        p2 = np.asarray(face["landmarks"], np.float64)
        nme_2d[i] = nme(p2, gt, box)
        if face.get("pose") is not None:
            pose[i] = [face["pose"]["pitch"], face["pose"]["yaw"], face["pose"]["roll"]]
    found = ~np.isnan(nme_2d)
    bins = labels.yaw_bin
    summary: dict = {"faces": n, "missed": int((~found).sum())}
    summary["missed_by_bin"] = [int((~found & (bins == b)).sum()) for b in range(len(YAW_BINS))]
    for name, values in (
        ("xy_3d", nme_3d),
        ("xy_2d", nme_2d),
        ("z", z_err),
        ("z_detilted", z_flat),
    ):
        ok = ~np.isnan(values)
        if ok.any():
            per_bin, mean = balanced(values[ok], bins[ok])
            summary[name] = {"by_bin": per_bin, "balanced": mean}
    in_range = np.all(np.abs(labels.pose) <= POSE_RANGE, axis=1)
    given = in_range & ~np.isnan(pose[:, 0])
    if given.any():
        errors = pose_mae(pose[given], labels.pose[given])  # pitch, yaw, roll
        summary["pose"] = {
            "mae": float(errors.mean()),
            "yaw": float(errors[:, 1].mean()),
            "pitch": float(errors[:, 0].mean()),
            "roll": float(errors[:, 2].mean()),
            "given": float(given.sum() / in_range.sum()),
        }
    return summary


def report(summary: dict, title: str) -> str:
    bins = " | ".join(f"{lo:.0f}-{hi:.0f} deg" for lo, hi in YAW_BINS)
    lines = [f"{title}: {summary['faces']} faces", "", f"| | {bins} | balanced |",
             "| --- |" + " --- |" * (len(YAW_BINS) + 1)]  # fmt: skip
    names = {"xy_3d": "landmarks_3d x, y NME", "xy_2d": "landmarks (2D) NME",
             "z": "z MAE", "z_detilted": "z MAE, tilt removed"}  # fmt: skip
    for key, name in names.items():
        if key in summary:
            cells = " | ".join(f"{v:.2%}" for v in summary[key]["by_bin"])
            lines.append(f"| {name} | {cells} | {summary[key]['balanced']:.2%} |")
    missed = " | ".join(str(v) for v in summary["missed_by_bin"])
    lines.append(
        f"| missed | {missed} | {summary['missed']} ({summary['missed'] / summary['faces']:.1%}) |"
    )
    lines.append("")
    if "pose" in summary:
        p = summary["pose"]
        lines.append(
            f"head pose MAE {p['mae']:.2f} deg (yaw {p['yaw']:.2f}, pitch {p['pitch']:.2f}, "
            f"roll {p['roll']:.2f}), given for {p['given']:.1%} of the faces within "
            f"{POSE_RANGE:.0f} deg"
        )
    else:
        lines.append("head pose: not in the records")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cli_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["val", "train", "all"], default="val")
    parser.add_argument("--json", type=Path, help="keep the CLI's records here")
    parser.add_argument("--from-json", type=Path, help="score these records; run nothing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)

    labels = split(args.part)
    if args.from_json is not None:
        records = read_records(args.from_json)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.json or Path(tmp) / "records.jsonl"
            run_cli(labels, out, cli_args, args.threads)
            records = read_records(out)
    summary = score(labels, records)
    print(report(summary, f"AFLW2000-3D dev, {args.part}"))
    if args.summary is not None:
        # The JSON and, beside it, the table with how it was made (README copies it).
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        command = " ".join(["python -m training.evaluate_aflw", *sys.argv[1:]])
        made = f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}"
        table = report(summary, f"AFLW2000-3D dev, {args.part}")
        args.summary.with_suffix(".md").write_text(
            f"{table}\n\nMeasured by `{command}` ({made}).\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
