"""Choose the face-presence threshold, and the detector threshold used with it, on
the validation faces; store both in the 2D model's spec.

    python -m training.choose_presence                    # the shipped model, 300w/val

Every validation image goes through the tool's detection (all quarter turns) at each
candidate detector threshold, and the annotated face's presence is recorded. The
presence threshold is set below all but the lowest ``--face-loss`` share of those faces
(never above 0.5), so the check costs at most that share of true faces; the detector
threshold is the lowest candidate that finds no more annotated faces than the next one
up would (lower ones only add candidates for the check to reject, and time).

The same images turned upside down choose the reading quality above which a crop is
taken to be upright without reading its half-turned twin (``upright_read_quality``,
util/aligner.py's upside-down check): BlazeFace fires on those faces as if upright, and
the bar is UPRIGHT_MARGIN times the best quality any of them was read with upright.
Non-face pictures are not used to choose anything: training/evaluate.py --wild reports
how many of them still give a face.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from training.evaluate import DEFAULT_DATA, load_annotated, match_annotated
from training.export import write_spec
from training.paths import MODELS_DIR
from util.aligner import FaceAligner
from util.io import read_image
from util.runtime import read_spec

DEFAULT_MODEL = MODELS_DIR / "fan2d_compact.onnx"
DETECTOR_THRESHOLDS = (0.5, 0.4, 0.3)


def presences(model: Path, samples: list, min_score: float, threads: int) -> list[float | None]:
    """Per image: the annotated face's presence, or None when it is not detected."""
    from tqdm import tqdm

    aligner = FaceAligner(model_2d=model, min_score=min_score, threads=threads, flip=False)
    aligner.landmark_model.presence_threshold = None  # measure, do not filter
    found = []
    for sample in tqdm(samples, desc=f"detector >= {min_score}", unit="img"):
        faces = aligner.align(read_image(sample.image))
        index = match_annotated([f.bbox for f in faces], sample.points)
        found.append(None if index is None else faces[index].presence)
    return found


# The upright-read bar over the best upside-down face's upright reading: a face read
# upright though upside down costs its whole reading, a twin read in vain one crop.
UPRIGHT_MARGIN = 1.2


def upside_down_readings(
    model: Path, samples: list, min_score: float, threads: int
) -> list[float]:
    """The reading quality of each face of the images turned by 180 deg that the
    upright detector pass finds, read as if upright, when its half-turned twin reads
    better (an upside-down face taken for upright)."""
    from tqdm import tqdm

    aligner = FaceAligner(model_2d=model, min_score=min_score, threads=threads, flip=False)
    stage = aligner.landmark_model
    found = []
    for sample in tqdm(samples, desc="upside down", unit="img"):
        image = np.ascontiguousarray(read_image(sample.image)[::-1, ::-1])
        for found_face in aligner.detect_first(image):
            bbox, roll = found_face.bbox, found_face.roll
            crops = [stage.crop(image, bbox, roll), stage.crop(image, bbox, roll + 180.0)]
            upright, twin = (stage.reading_quality(*r) for r in stage.run_crops(crops))
            if twin > upright:
                found.append(upright)
    return found


def choose(
    model: Path, data: Path, face_loss: float = 0.005, threads: int = 0, limit: int | None = None
) -> dict | None:
    """Measure, choose and write both thresholds into ``model``'s spec; what was chosen
    (None when no annotated face was found). ``limit``: the first N images only."""
    samples = load_annotated(data)[:limit]
    by_threshold = {t: presences(model, samples, t, threads) for t in DETECTOR_THRESHOLDS}
    for t, values in by_threshold.items():
        print(f"detector >= {t}: {sum(v is None for v in values)} of {len(values)} missed")
    chosen = DETECTOR_THRESHOLDS[0]
    for t in DETECTOR_THRESHOLDS[1:]:
        if sum(v is None for v in by_threshold[t]) < sum(v is None for v in by_threshold[chosen]):
            chosen = t
    values = np.array([v for v in by_threshold[chosen] if v is not None])
    if values.size == 0:
        return None
    threshold = float(min(0.5, np.quantile(values, face_loss)))
    print(
        f"presence of {values.size} faces: min {values.min():.3f}, "
        f"1 % {np.quantile(values, 0.01):.3f}, median {np.median(values):.3f}; "
        f"threshold {threshold:.3f}, detector >= {chosen}"
    )
    upside_down = upside_down_readings(model, samples, chosen, threads)
    upright_bar = round(UPRIGHT_MARGIN * max(upside_down), 4) if upside_down else None
    print(
        f"{len(upside_down)} upside-down faces read as if upright: quality up to "
        f"{max(upside_down, default=float('nan')):.3f}; upright_read_quality {upright_bar}"
    )
    spec = read_spec(model)
    chosen_values = {
        "upright_read_quality": upright_bar,
        "presence_threshold": round(threshold, 4),
        "detector_min_score": chosen,
        "presence_chosen_by": f"training/choose_presence.py on {len(samples)} images of "
        f"{data.name}, face loss {face_loss}",
    }
    write_spec(model, dataclasses.replace(spec, extra=dict(spec.extra) | chosen_values))
    return chosen_values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--face-loss", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if choose(args.model, args.data, args.face_loss, args.threads) is None:
        print(f"{args.data}: no annotated face found, nothing chosen", file=sys.stderr)
        return 1
    print(f"wrote {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
