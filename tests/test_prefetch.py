"""Work ahead for folders (util.prefetch, FaceAligner.iter_paths): the same results in the
same order as without it, errors recorded per file, a bounded queue, and no thread left
running once the loop stops."""

from __future__ import annotations

import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.paths import REPO, SAMPLES_DIR
from util.prefetch import prefetched

SAMPLE = SAMPLES_DIR / "astronaut.png"


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("prefetch")]


@pytest.mark.parametrize(("ahead", "workers"), [(0, 1), (1, 1), (3, 1), (1, 2), (3, 3)])
def test_prefetched_keeps_the_order(ahead: int, workers: int) -> None:
    def slow_when_even(k: int) -> int:
        time.sleep(0.002 if k % 2 == 0 else 0.0)
        return k * k

    results = prefetched(slow_when_even, range(20), ahead, workers)
    assert list(results) == [k * k for k in range(20)]
    assert _prefetch_threads() == []


def test_prefetched_workers_run_side_by_side_and_stay_bounded() -> None:
    """Two workers: two items under way at once (each waits for the other to start),
    and never more started than the one consumed plus ``ahead``."""
    barrier = threading.Barrier(2, timeout=5)
    started: list[int] = []

    def meet(k: int) -> int:
        started.append(k)
        if k < 2:
            barrier.wait()  # would time out if the two first items ran one after another
        return k

    consumed = []
    for k in prefetched(meet, range(12), ahead=2, workers=2):
        time.sleep(0.005)
        consumed.append(k)
        assert len(started) <= len(consumed) + 2
    assert consumed == list(range(12))
    assert _prefetch_threads() == []


def test_prefetched_stays_at_most_ahead() -> None:
    started: list[int] = []

    def record(k: int) -> int:
        started.append(k)
        return k

    consumed = []
    for k in prefetched(record, range(30), ahead=2):
        time.sleep(0.005)  # a slow consumer: the worker would run far ahead if unbounded
        consumed.append(k)
        # the one being used, and at most 2 after it, were ever started
        assert len(started) <= len(consumed) + 2
    assert consumed == list(range(30))


def test_prefetched_raises_at_the_failing_item_in_order() -> None:
    def fail_on_3(k: int) -> int:
        if k == 3:
            raise ValueError("three")
        return k

    seen = []
    with pytest.raises(ValueError, match="three"):
        for k in prefetched(fail_on_3, range(10), ahead=2):
            seen.append(k)
    assert seen == [0, 1, 2]
    assert _prefetch_threads() == []


def test_prefetched_stops_its_thread_when_the_loop_stops() -> None:
    started: list[int] = []

    def record(k: int) -> int:
        started.append(k)
        time.sleep(0.01)
        return k

    results = prefetched(record, range(1000), ahead=3)
    for k in results:
        if k == 2:
            break
    results.close()  # as contextlib.closing / the end of a for loop in a function does
    assert _prefetch_threads() == []
    assert len(started) <= 2 + 1 + 3  # nothing more was started after the stop


def test_prefetched_without_ahead_runs_in_this_thread() -> None:
    names = list(prefetched(lambda _: threading.current_thread().name, range(3), 0))
    assert names == [threading.current_thread().name] * 3


def _folder(tmp_path: Path) -> Path:
    """Good images and unreadable files, interleaved in name order."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "a.png")
    (folder / "b.jpg").write_text("not an image")
    Image.open(SAMPLE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "c.png")
    (folder / "d.png").write_bytes(b"")
    Image.new("RGB", (64, 48), (90, 90, 90)).save(folder / "e.png")  # no face
    shutil.copy(SAMPLE, folder / "f.png")
    return folder


def test_iter_paths_with_prefetch_matches_without(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner

    folder = _folder(tmp_path)
    aligner = FaceAligner(model_2d=tiny_models.fan2d, threads=1)
    runs = {n: list(aligner.iter_paths([str(folder)], prefetch=n)) for n in (0, 2)}
    # whole images in two worker threads (the CLI's folder run on two cores)
    runs["workers"] = list(aligner.iter_paths([str(folder)], prefetch=2, workers=2))
    for n, run in runs.items():
        assert [p.name for p, *_ in run] == ["a.png", "b.jpg", "c.png", "d.png", "e.png", "f.png"]
        errors = {p.name: e for p, _, _, e in run if e is not None}
        assert sorted(errors) == ["b.jpg", "d.png"], n
        assert "not an image" in errors["b.jpg"] and "empty file" in errors["d.png"]
        assert all(image is None and faces == [] for p, image, faces, e in run if e), n
    pairs = [*zip(runs[2], runs[0], strict=True), *zip(runs["workers"], runs[0], strict=True)]
    for (path, image, faces, _), (_, image0, faces0, _) in pairs:
        if image is None:
            continue
        np.testing.assert_array_equal(image, image0)
        assert len(faces) == len(faces0), path
        for face, face0 in zip(faces, faces0, strict=True):
            np.testing.assert_allclose(face.landmarks, face0.landmarks, atol=1e-4)
            np.testing.assert_allclose(face.bbox, face0.bbox, atol=1e-4)
    assert _prefetch_threads() == []


def test_iter_paths_stopped_early_leaves_no_thread(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner

    aligner = FaceAligner(model_2d=tiny_models.fan2d, threads=1)
    folder = _folder(tmp_path)
    for workers in (1, 2):
        results = aligner.iter_paths([str(folder)], prefetch=2, workers=workers)
        next(results)
        results.close()
        assert _prefetch_threads() == []


def test_folder_threads_split() -> None:
    """--threads N on several images: N images side by side on one-thread sessions;
    one image, video (None), ailia or one core: the sessions get the threads."""
    from util.cli import folder_threads

    two = [Path("a.jpg"), Path("b.jpg")]
    assert folder_threads(2, two, "onnxruntime") == (1, 2)
    assert folder_threads(1, two, "onnxruntime") == (1, 1)
    assert folder_threads(2, two[:1], "onnxruntime") == (2, 1)
    assert folder_threads(2, None, "onnxruntime") == (2, 1)
    assert folder_threads(2, two, "ailia") == (2, 1)
    assert folder_threads(16, two, "onnxruntime") == (4, 4)  # GIL: at most 4 images
    threads, workers = folder_threads(0, two, "onnxruntime")
    assert (threads, workers) == (0, 1) or threads * workers >= 2


def test_video_threads_split() -> None:
    """--threads N on a video file: two frames in flight on sessions of N / 2 threads;
    a camera (device number), ailia or one core: one frame on all the threads."""
    from util.cli import video_threads

    assert video_threads(2, "clip.mp4", "onnxruntime") == (1, 2)
    assert video_threads(4, "clip.mp4", "onnxruntime") == (2, 2)
    assert video_threads(1, "clip.mp4", "onnxruntime") == (1, 1)
    assert video_threads(2, "0", "onnxruntime") == (2, 1)
    assert video_threads(2, "clip.mp4", "ailia") == (2, 1)
    # --frames-in-flight wins: 1 on a file, 2 on a camera
    assert video_threads(2, "clip.mp4", "onnxruntime", 1) == (2, 1)
    assert video_threads(4, "0", "onnxruntime", 2) == (2, 2)
    assert video_threads(2, "clip.mp4", "ailia", 2) == (2, 1)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX")
def test_ctrl_c_in_a_folder_exits_cleanly(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    """Ctrl-C while images are read ahead: exit 130 with the one-line message, the
    records so far written, no traceback, no hang on the reading thread."""
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(200):
        shutil.copy(SAMPLE, folder / f"{k:03d}.png")
    cli = REPO / "face_alignment.py"
    command = [sys.executable, str(cli), "--threads", "1", "-q", "--model-2d"]
    command += [str(tiny_models.fan2d), "-i", str(folder), "--json", "-"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        first = proc.stdout.readline()  # one image done: the loop and its thread are running
        assert '"image"' in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert len(out.splitlines()) + 1 < 200


def test_stage_times_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long folder or video run records a time per call: the lists must not grow with
    the run (memory flat), and keep the latest samples."""
    from util import face

    monkeypatch.setattr(face, "STAGE_SAMPLES", 10)
    times = face.StageTimes()
    for k in range(1000):
        times.add("landmarks", float(k))
    values = times.seconds["landmarks"]
    assert len(values) <= 10 and values[-1] == 999.0 and values == sorted(values)


def test_sessions_keep_no_arena(tiny_models) -> None:  # noqa: ANN001
    """Model memory goes back to malloc after each call: an arena kept the largest
    call's memory for good and grew over a folder run (util/runtime.py)."""
    from util import runtime

    model = runtime.OnnxModel(tiny_models.fan2d, threads=1)
    options = model._session.get_session_options()
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    size = model.spec.input_size
    for batch in (1, 16, 1):  # any batch after any other, as a crowd photo in a folder
        assert len(model.run(np.zeros((batch, 3, *size), np.float32))[0]) == batch


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the heap setting is glibc's",
)
def test_heap_growth_limit_takes_on_glibc() -> None:
    from util.runtime import limit_heap_growth

    assert limit_heap_growth() is True


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_read_ahead_keeps_order_and_stays_bounded(ahead: int) -> None:
    from util.prefetch import read_ahead

    pulled: list[int] = []

    def source():  # noqa: ANN202 - a generator read by one thread, as video frames are
        for k in range(20):
            pulled.append(k)
            yield k

    consumed = []
    for k in read_ahead(source(), ahead):
        time.sleep(0.002)
        consumed.append(k)
        # the one being used, at most `ahead` waiting, and one held by a blocked put
        assert len(pulled) <= len(consumed) + ahead + 1
    assert consumed == list(range(20))
    assert [t for t in threading.enumerate() if t.name == "prefetch-read"] == []


def test_read_ahead_raises_in_place_and_stops_when_closed() -> None:
    from util.prefetch import read_ahead

    def failing():  # noqa: ANN202
        yield from range(3)
        raise OSError("camera gone")

    seen = []
    with pytest.raises(OSError, match="camera gone"):
        for k in read_ahead(failing(), 2):
            seen.append(k)
    assert seen == [0, 1, 2]

    pulled: list[int] = []

    def endless():  # noqa: ANN202
        k = 0
        while True:
            pulled.append(k)
            yield k
            k += 1

    frames = read_ahead(endless(), 2)
    assert next(frames) == 0
    frames.close()
    count = len(pulled)
    time.sleep(0.05)
    assert len(pulled) == count  # nothing read after the stop
    assert [t for t in threading.enumerate() if t.name == "prefetch-read"] == []
