"""Video in and out through OpenCV: webcams, files, an atomic writer, a display check."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import cv2
import numpy as np

from .io import InputError
from .prefetch import read_ahead

FOURCC_BY_SUFFIX = {
    ".mp4": "mp4v",
    ".m4v": "mp4v",
    ".mov": "mp4v",
    ".avi": "MJPG",
    ".mkv": "MJPG",
    ".webm": "VP80",
}


def open_capture(source: str) -> cv2.VideoCapture:
    """An integer is a webcam index, anything else a video file."""
    if source.isdigit():
        with _opencv_quiet():
            capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise InputError(f"webcam {source}: cannot open camera")
        return capture
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    # FFmpeg's own messages about a file it cannot decode would bury our one-line error.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with _opencv_quiet():
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path}: cannot open video (not a video, or an unsupported codec)")
    return capture


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's warnings (e.g. every backend that fails to open a camera) as errors only:
    the caller reports the failure in one line of its own."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(level)


# Frames decoded ahead of the one being worked on (read_frames): one lets the next frame's
# decoding and colour conversion (3 % of a frame's CPU time at 640x480, cProfile) run on
# the other core while the models work; more would only add latency on a webcam.
READ_AHEAD_FRAMES = 1


def read_frames(
    capture: cv2.VideoCapture, ahead: int = 0
) -> Generator[np.ndarray, None, None]:
    """RGB frames until the stream ends; ``ahead`` > 0 reads them that many frames ahead
    in a background thread (close the iterator, or finish it, before releasing the
    capture)."""
    return read_ahead(_frames(capture), ahead)


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        # cvtColor, not frame[..., ::-1]: 11x faster copy (py-spy: 7 % of a video frame)
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def frame_count(capture: cv2.VideoCapture) -> int | None:
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return count if count > 0 else None


def frame_rate(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and 1.0 <= fps <= 240.0 else 30.0


class VideoSink:
    """Writes RGB frames to a temporary file beside ``path``; ``close`` renames it."""

    def __init__(self, path: Path, fps: float) -> None:
        fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
        if fourcc is None:
            raise InputError(f"{path}: unsupported video format (use .mp4 or .avi)")
        if path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: cannot write there ({path.parent} is a file)")
        if not path.parent.is_dir():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{path}: cannot write there ({exc.strerror or exc})") from None
        self.path, self.fps, self.fourcc = path, fps, fourcc
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame_rgb: np.ndarray) -> None:
        if self.writer is None:
            height, width = frame_rgb.shape[:2]
            self.writer = cv2.VideoWriter(
                str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height)
            )
            if not self.writer.isOpened():
                self.discard()
                raise InputError(f"{self.path}: cannot write video here")
        self.writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (an empty run writes nothing)."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def display_available() -> bool:
    """True when a window can be shown (a display exists and OpenCV has a GUI)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    return "GUI:" not in cv2.getBuildInformation() or _has_gui_backend()


def _has_gui_backend() -> bool:
    info = cv2.getBuildInformation()
    section = info.split("GUI:", 1)[1].split("\n\n", 1)[0]
    return any(word in section for word in ("GTK", "QT", "WIN32UI", "COCOA", "YES"))
