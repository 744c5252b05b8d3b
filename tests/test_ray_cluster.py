"""The Ray engine against real runtimes (issue 30): the embedded runtime is never
joined to a stale cluster, and the installed package runs on a cluster started with
``ray start --head`` (``--address auto``), shipping nothing (every node has it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from training.paths import REPO, SAMPLES_DIR

pytest.importorskip(
    "ray.data", reason="the Ray engine's tests need Ray Data (requirements-ray.txt)"
)

SAMPLE = SAMPLES_DIR / "astronaut.png"
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_tmp() -> Path:
    """A short RAY_TMPDIR of the test's own (Ray's socket paths must stay short)."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _images(folder: Path, count: int = 2) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        shutil.copy(SAMPLE, folder / f"face{k}.png")
    return [str(folder / f"face{k}.png") for k in range(count)]


def test_stale_cluster_file_does_not_hang_the_embedded_runtime(
    tmp_path: Path, ray_tmp: Path
) -> None:
    """A cluster file left by a head that died: without --address the run starts a
    runtime of its own instead of retrying the dead one."""
    (ray_tmp / "ray_current_cluster").write_text("127.0.0.1:6553\n")
    env = os.environ | {"RAY_TMPDIR": str(ray_tmp)}
    out = tmp_path / "r.jsonl"
    run = subprocess.run(
        [sys.executable, str(REPO / "face_alignment.py"), "--engine", "ray", "-q",
         "-i", *_images(tmp_path / "in"), "--json", str(out), "--threads", "1", "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 2
    assert "core_worker" not in run.stderr and "raylet" not in run.stderr  # -q: quiet


def _installed_cli() -> Path:
    cli = BIN / "face-alignment"
    if not cli.is_file() or not (BIN / "ray").is_file():
        pytest.skip("needs the package installed (pip install .) with Ray beside it")
    where = subprocess.run(
        [sys.executable, "-c", "import face_alignment; print(face_alignment.__file__)"],
        cwd="/", capture_output=True, text=True,
    )  # fmt: skip
    # Installed: in site-packages (the venv may sit inside the clone), not the clone's.
    if where.returncode != 0 or "site-packages" not in Path(where.stdout.strip()).parts:
        pytest.skip("face_alignment is not installed (pip install .), or installed editable")
    return cli


def test_installed_package_on_a_local_cluster(tmp_path: Path, ray_tmp: Path) -> None:
    cli = _installed_cli()
    env = os.environ | {"RAY_TMPDIR": str(ray_tmp)}
    env.pop("PYTHONPATH", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (ray_tmp / "ray_current_cluster").is_file():
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the head did not come up"
            time.sleep(1)
        out = tmp_path / "r.jsonl"
        run = subprocess.run(
            [str(cli), "--engine", "ray", "--address", "auto", "-q", "-i",
             *_images(tmp_path / "in"), "--json", str(out), "--threads", "1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [len(r["faces"]) for r in records] == [1, 1]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)


def test_actors_write_crops_inside_their_folder(tmp_path: Path, ray_tmp: Path) -> None:
    """Names that lead out of --crops (a list file's "../.." entry, an absolute path)
    are written inside it, and the records hold the crops' paths."""
    inputs = _images(tmp_path / "photos")
    listing = tmp_path / "lists" / "deep" / "names.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text(f"../../photos/face0.png\n{inputs[1]}\n")
    out, crops = tmp_path / "r.jsonl", tmp_path / "crops"
    env = os.environ | {"RAY_TMPDIR": str(ray_tmp)}
    run = subprocess.run(
        [sys.executable, str(REPO / "face_alignment.py"), "--engine", "ray", "-q",
         "-i", str(listing), "--json", str(out), "--crops", str(crops), "--threads", "1",
         "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    files = [Path(r["faces"][0]["crop"]["file"]) for r in records]
    assert len(files) == 2 and all(f.is_file() for f in files)
    assert all(crops.resolve() in f.resolve().parents for f in files)
    assert sorted(p.resolve() for p in crops.rglob("*.png")) == sorted(f.resolve() for f in files)
