"""Non-face crops for training the face-presence output.

What BlazeFace hands the landmark model when it is wrong: background, hair, clothes,
textures, text, and parts of a face too small or too far off-centre to place 68 points
(the "faces" found inside the lenses of glasses in a close-up). Every negative is a
256x256 uint8 RGB crop.

Sources, all available offline and none of them the evaluation's non-face images
(training/evaluate.py uses scikit-image's sample pictures, which are kept out of here):
- the background of the 300-W training crops, away from the annotated face;
- scikit-learn's two sample photographs (a building, a flower), when installed;
- procedural textures, stripes, shapes and text;
- face crops shuffled as a jigsaw, and windows on a part of a face.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.data import Face
from util.crop import crop_matrix, warp_crop


def _package_photos() -> list[np.ndarray]:
    """scikit-learn's sample photographs (RGB), or none when it is not installed."""
    try:
        import sklearn
    except ImportError:
        return []
    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    photos = []
    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            photos.append(image[..., ::-1].copy())
    return photos


class NegativeCrops:
    """Draws a random non-face crop; deterministic for a given generator."""

    def __init__(self, faces: list[Face], size: int = 256) -> None:
        self.faces, self.size = faces, size
        self.photos = _package_photos()
        self.kinds = [
            (self.background, 0.35),
            (self.face_part, 0.2),
            (self.jigsaw, 0.1),
            (self.texture, 0.2),
            (self.text, 0.05),
            (self.photo, 0.1 if self.photos else 0.0),
            (self.turned_face, 0.0),
        ]

    def with_turned_faces(self, share: float) -> NegativeCrops:
        """Make ``share`` of the negatives whole faces turned 110-250 degrees in the
        image plane: BlazeFace fires on upside-down faces as if they were upright, and
        the tool's upright check then has the presence score to go on."""
        rest = sum(w for make, w in self.kinds if make != self.turned_face)
        self.kinds = [
            (make, share * rest / (1 - share) if make == self.turned_face else w)
            for make, w in self.kinds
        ]
        return self

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        weights = np.array([w for _, w in self.kinds])
        make = self.kinds[int(rng.choice(len(self.kinds), p=weights / weights.sum()))][0]
        return make(rng)

    def _window(self, image: np.ndarray, centre, side: float, rng) -> np.ndarray:
        angle = float(rng.normal(0, 20)) if rng.random() < 0.5 else 0.0
        matrix = crop_matrix(np.asarray(centre, np.float64), side, self.size, angle)
        return warp_crop(np.ascontiguousarray(image), matrix, self.size)

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A window of a training image that holds at most a sliver of its face."""
        face = self.faces[int(rng.integers(len(self.faces)))]
        lo, hi = face.points.min(0), face.points.max(0)
        h, w = face.image.shape[:2]
        face_size = float(np.sqrt(np.prod(hi - lo)))
        for _ in range(20):
            side = face_size * float(rng.uniform(0.3, 0.8))
            cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
            # overlap of the window with the landmark box, as a share of the box
            ox = max(0.0, min(cx + side / 2, hi[0]) - max(cx - side / 2, lo[0]))
            oy = max(0.0, min(cy + side / 2, hi[1]) - max(cy - side / 2, lo[1]))
            if ox * oy < 0.08 * float(np.prod(hi - lo)):
                return self._window(face.image, (cx, cy), side, rng)
        return self.texture(rng)

    def face_part(self, rng: np.random.Generator) -> np.ndarray:
        """A close window on one part of a face (an eye, the mouth, an ear), or a window
        shifted so far that most of the face is outside it."""
        face = self.faces[int(rng.integers(len(self.faces)))]
        lo, hi = face.points.min(0), face.points.max(0)
        face_size = float(np.sqrt(np.prod(hi - lo)))
        if rng.random() < 0.6:
            centre = face.points[int(rng.integers(68))] + rng.normal(0, 0.05 * face_size, 2)
            side = face_size * float(rng.uniform(0.2, 0.45))
        else:
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction) + 1e-9
            centre = (lo + hi) / 2 + direction * face_size * float(rng.uniform(1.0, 1.4))
            side = face_size * float(rng.uniform(1.0, 1.6))
        return self._window(face.image, centre, side, rng)

    def turned_face(self, rng: np.random.Generator) -> np.ndarray:
        """A whole face, cropped as the detector would, but upside down or nearly."""
        face = self.faces[int(rng.integers(len(self.faces)))]
        lo, hi = face.points.min(0), face.points.max(0)
        face_size = float(np.sqrt(np.prod(hi - lo)))
        centre = (lo + hi) / 2 + rng.normal(0, 0.05 * face_size, 2)
        side = face_size * 1.6 * float(np.exp(rng.normal(0, 0.1)))
        angle = float(rng.uniform(110, 250))
        matrix = crop_matrix(np.asarray(centre, np.float64), side, self.size, angle)
        return warp_crop(np.ascontiguousarray(face.image), matrix, self.size)

    def jigsaw(self, rng: np.random.Generator) -> np.ndarray:
        """A face crop cut into a grid and shuffled: face texture, no face layout."""
        face = self.faces[int(rng.integers(len(self.faces)))]
        lo, hi = face.points.min(0), face.points.max(0)
        crop = self._window(face.image, (lo + hi) / 2, 1.4 * float(np.sqrt(np.prod(hi - lo))), rng)
        cells = int(rng.choice([3, 4]))
        step = self.size // cells
        tiles = [
            crop[r * step : (r + 1) * step, c * step : (c + 1) * step]
            for r in range(cells)
            for c in range(cells)
        ]
        order = rng.permutation(len(tiles))
        rows = [
            np.concatenate([tiles[order[r * cells + c]] for c in range(cells)], axis=1)
            for r in range(cells)
        ]
        return cv2.resize(np.concatenate(rows, axis=0), (self.size, self.size))

    def texture(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth noise at a random scale, stripes, a checkerboard or random shapes."""
        s = self.size
        kind = rng.integers(4)
        if kind == 0:
            cells = int(rng.integers(2, 64))
            noise = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
            image = cv2.resize(noise, (s, s), interpolation=cv2.INTER_CUBIC)
        elif kind == 1:
            yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
            theta, period = rng.uniform(0, np.pi), rng.uniform(6, 60)
            wave = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            image = a + (b - a) * (wave[..., None] * 0.5 + 0.5)
        elif kind == 2:
            cell = int(rng.integers(8, 64))
            yy, xx = np.mgrid[0:s, 0:s]
            board = ((yy // cell + xx // cell) % 2).astype(np.float32)
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            image = a + (b - a) * board[..., None]
        else:
            image = np.full((s, s, 3), rng.uniform(0, 255, 3), np.float32)
            for _ in range(int(rng.integers(3, 15))):
                colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
                centre = tuple(int(v) for v in rng.integers(0, s, 2))
                if rng.random() < 0.5:
                    axes = tuple(int(v) for v in rng.integers(5, s // 2, 2))
                    cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
                else:
                    corner = tuple(int(v) for v in rng.integers(0, s, 2))
                    cv2.rectangle(image, centre, corner, colour, -1)
        if rng.random() < 0.5:
            image = image + rng.normal(0, rng.uniform(2, 20), image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)

    def text(self, rng: np.random.Generator) -> np.ndarray:
        """Lines of random letters on a plain background."""
        s = self.size
        image = np.full((s, s, 3), rng.uniform(150, 255, 3), np.uint8)
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,"
        scale = float(rng.uniform(0.4, 1.6))
        colour = tuple(float(v) for v in rng.uniform(0, 100, 3))
        y = int(rng.integers(10, 40))
        while y < s:
            line = "".join(rng.choice(list(letters), int(rng.integers(5, 30))))
            cv2.putText(
                image,
                line,
                (int(rng.integers(-20, 20)), y),
                int(rng.integers(0, 8)),
                scale,
                colour,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
            y += int(30 * scale + rng.integers(5, 25))
        return image

    def photo(self, rng: np.random.Generator) -> np.ndarray:
        image = self.photos[int(rng.integers(len(self.photos)))]
        h, w = image.shape[:2]
        side = float(rng.uniform(0.15, 0.7)) * min(h, w)
        centre = (rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2))
        return self._window(image, centre, side, rng)
