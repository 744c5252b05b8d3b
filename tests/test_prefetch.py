"""Work ahead for folders (util.prefetch, FaceAligner.iter_paths): the same results in the
same order as without it, errors recorded per file, a bounded queue, and no thread left
running once the loop stops."""

from __future__ import annotations

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


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_prefetched_keeps_the_order(ahead: int) -> None:
    def slow_when_even(k: int) -> int:
        time.sleep(0.002 if k % 2 == 0 else 0.0)
        return k * k

    assert list(prefetched(slow_when_even, range(20), ahead)) == [k * k for k in range(20)]
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
    for n, run in runs.items():
        assert [p.name for p, *_ in run] == ["a.png", "b.jpg", "c.png", "d.png", "e.png", "f.png"]
        errors = {p.name: e for p, _, _, e in run if e is not None}
        assert sorted(errors) == ["b.jpg", "d.png"], n
        assert "not an image" in errors["b.jpg"] and "empty file" in errors["d.png"]
        assert all(image is None and faces == [] for p, image, faces, e in run if e), n
    for (path, image, faces, _), (_, image0, faces0, _) in zip(runs[2], runs[0], strict=True):
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
    results = aligner.iter_paths([str(_folder(tmp_path))], prefetch=2)
    next(results)
    results.close()
    assert _prefetch_threads() == []


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
