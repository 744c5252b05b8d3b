"""The Ray engine (--engine ray) against the local engine, with tiny random models.

One embedded runtime is started through the CLI (a subprocess, as a user runs it) and
one in this process for the rest (killed actor, resume, Parquet in and out). Skipped
when Ray is not installed (pip install -r requirements-ray.txt), except the check that
--engine ray then says what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
from util import cli as face_alignment  # the CLI module: build_parser, main, aligner_options
from util import ray_engine

CLI = REPO / "face_alignment.py"
SAMPLE = SAMPLES_DIR / "astronaut.png"
HAVE_RAY = all(importlib.util.find_spec(m) for m in ("ray", "pyarrow"))
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (requirements-ray.txt)")
# Ray 2.60's raylet gives its agents 15 s to start, a limit no setting raises; on a
# machine whose CPUs another job holds, starting Ray fails with this, whatever we do.
SLOW_START = "timed out during startup"


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLI), "--threads", "1", "-q", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Same inputs in the same order, same errors, landmarks within 0.01 px."""
    assert [r["image"] for r in got] == [r["image"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert (a["error"], a["width"], a["height"]) == (b["error"], b["width"], b["height"])
        assert len(a["faces"]) == len(b["faces"]), a["image"]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert set(fa) == set(fb)  # presence, landmarks_3d, ... as the local engine's
            np.testing.assert_allclose(fa["landmarks"], fb["landmarks"], atol=0.01)
            np.testing.assert_allclose(fa["bbox"], fb["bbox"], atol=0.01)
            for key in ("score", "presence"):
                assert (fa[key] is None) == (fb[key] is None), key
                if fa[key] is not None:
                    assert abs(fa[key] - fb[key]) <= 1e-3, key


@pytest.fixture(scope="module")
def models(tiny_models) -> list[str]:  # noqa: ANN001
    return ["--model-2d", str(tiny_models.fan2d)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three images (the sample, mirrored, smaller) and one corrupt file."""
    folder = tmp_path_factory.mktemp("inputs")
    image = Image.open(SAMPLE).convert("RGB")
    image.save(folder / "a_sample.png")
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b_mirror.jpg", quality=90)
    image.resize((300, 300)).save(folder / "c_small.png")
    (folder / "d_corrupt.jpg").write_text("not an image\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def local_records(folder: Path, models: list[str], tmp_path_factory) -> list[dict]:  # noqa: ANN001
    """The local engine's output on the folder: the reference."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    result = run_cli(*models, "-i", folder, "--json", out, cwd=out.parent)
    assert result.returncode == 1, result.stderr
    return read_jsonl(out)


# -- without Ray ------------------------------------------------------------------------


def test_without_ray_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None; sys.path.insert(0, sys.argv[1]);"
        "import face_alignment;"
        "sys.exit(face_alignment.main(['--engine', 'ray', '-q', '--json', 'x.jsonl']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -r requirements-ray.txt" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_ray_only_flags_need_the_ray_engine(tmp_path: Path) -> None:
    result = run_cli("--workers", "2", "--json", "x.jsonl", cwd=tmp_path)
    assert result.returncode == 2 and "--engine ray" in result.stderr


def test_inputs_expand_like_the_local_engine(folder: Path, tmp_path: Path) -> None:
    """Folders and globs as util.io.expand_inputs; a list file's lines relative to it."""
    listing = tmp_path / "list.txt"
    rel = os.path.relpath(folder / "c_small.png", tmp_path)
    listing.write_text(f"# images\n{folder / 'a_sample.png'}\n\n{rel}\nmissing.png\n")
    inputs = ray_engine.expand_specs([str(folder), str(folder / "b_*"), str(listing)])
    names = sorted(p.name for p in folder.iterdir())
    assert inputs.paths[:4] == [str(folder / n) for n in names]
    assert inputs.paths[4:] == [
        str(folder / "b_mirror.jpg"),
        str(folder / "a_sample.png"),
        str(tmp_path / rel),
        str(tmp_path / "missing.png"),
    ]


@needs_ray
def test_actor_class_gives_the_local_records(
    folder: Path, models: list[str], local_records: list[dict], tmp_path: Path
) -> None:
    """AlignBatch, called as Ray Data calls it, on paths and on the row groups of a
    Parquet input: the local records; the error of a corrupt file names the input, not a
    temporary file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    args = face_alignment.build_parser().parse_args(models)
    options = ray_engine.aligner_options(args)
    worker = ray_engine.AlignBatch(options, threads=1)
    names = np.asarray([str(p) for p in sorted(folder.iterdir())], dtype=object)
    batch = {"index": np.arange(len(names)), "name": names}
    from_paths = worker(batch)
    assert list(from_paths["index"]) == list(range(len(names)))
    assert_same_records([json.loads(r) for r in from_paths["record"]], local_records)

    source = tmp_path / "images.parquet"  # two row groups: rows 0-2 and 3
    data = pa.array([Path(n).read_bytes() for n in names], pa.binary())
    pq.write_table(pa.table({"path": list(names), "image": data}), source, row_group_size=3)
    parquet = ray_engine.expand_specs([str(source)]).parquet
    assert parquet.row_groups == [(str(source), 0, 3), (str(source), 1, 1)]
    reader = ray_engine.AlignBatch(options, threads=1, parquet=parquet)
    from_bytes = [
        reader({"index": [i], "file": [str(source)], "row_group": [g]}) for i, g in ((0, 0), (3, 1))
    ]
    assert [i for part in from_bytes for i in part["index"]] == list(range(len(names)))
    records = [json.loads(r) for part in from_bytes for r in part["record"]]
    assert_same_records(records, local_records)

    skipping = ray_engine.AlignBatch(options, threads=1, skip=frozenset(names[:3]))
    assert list(skipping(batch)["index"]) == [3]


def test_model_flags_reach_the_actors(folder: Path, models: list[str]) -> None:
    """The actors' FaceAligner gets the local engine's options (--precision,
    --max-pixels, --flip, ...), model paths made absolute."""
    argv = ["--precision", "fp32", "--max-pixels", "1000", "--flip", "off", "--min-score", "0.3"]
    args = face_alignment.build_parser().parse_args([*models, *argv])
    options = ray_engine.aligner_options(args)
    local = face_alignment.aligner_options(args)
    assert options == local | {"model_2d": str(Path(models[1]).resolve())}
    assert (options["precision"], options["max_pixels"], options["flip"]) == ("fp32", 1000, False)
    worker = ray_engine.AlignBatch(options, threads=1)
    out = worker({"index": [0], "name": [str(folder / "a_sample.png")]})
    error = json.loads(out["record"][0])["error"]
    assert "too large" in error and "--max-pixels" in error


def fake_record(name: str, faces: int, error: str | None = None) -> dict:
    face = {
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "score": 0.9,
        "presence": None,
        "landmarks": [[1.0, 2.0]] * 68,
        "landmark_scores": [0.5] * 68,
    }
    size = None if error else 10
    return {"image": name, "width": size, "height": size, "faces": [face] * faces, "error": error}


def test_json_sink_resumes_after_its_last_whole_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lines = [json.dumps(fake_record(n, 1)) for n in ("a", "b", "c")]
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:30], encoding="utf-8")
    sink = ray_engine.JsonLinesSink(str(out), resume=True)
    assert sink.done == {"a": 1, "b": 1} and sink.errors == 0
    sink.write({}, lines[2])
    sink.close()
    assert out.read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    ray_engine.JsonLinesSink(str(out), resume=False).close()  # a new run starts afresh
    assert out.read_text(encoding="utf-8") == ""


@needs_ray
def test_parquet_sink_one_row_per_face(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "faces"
    sink = ray_engine.ParquetSink(str(out), resume=False)
    for record in (fake_record("a", 2), fake_record("b", 0), fake_record("c", 0, "c: bad")):
        sink.write(record, "")
        sink.sync()  # after each batch: no part file yet (one a minute at most)
    assert not list(out.glob("part-*"))
    sink.close()
    rows = pq.read_table(out).to_pylist()
    assert [(r["image"], r["face"], r["error"]) for r in rows] == [
        ("a", 0, None),
        ("a", 1, None),
        ("b", None, None),
        ("c", None, "c: bad"),
    ]
    assert rows[0]["landmarks"] == [[1.0, 2.0]] * 68 and rows[2]["landmarks"] is None
    with pytest.raises(ray_engine.EngineError, match="--resume"):
        ray_engine.ParquetSink(str(out), resume=False)
    again = ray_engine.ParquetSink(str(out), resume=True)
    assert again.done == {"a": 1, "b": 1, "c": 1} and again.errors == 1
    again.write(fake_record("d", 1), "")
    again.close()
    assert sorted(p.name for p in out.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    assert [r["image"] for r in pq.read_table(out).to_pylist()][-1] == "d"


# -- the embedded runtime, as a user runs it ---------------------------------------------


@needs_ray
def test_embedded_runtime_matches_local_engine(
    folder: Path, models: list[str], local_records: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "ray.jsonl"
    result = run_cli(
        *models, "--engine", "ray", "--workers", "2", "-i", folder, "--json", out, cwd=tmp_path
    )
    if SLOW_START in result.stderr:
        pytest.skip(f"Ray could not start on this machine: {result.stderr.strip()}")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # the corrupt file, as the local engine
    records = read_jsonl(out)
    assert_same_records(records, local_records)
    corrupt = records[-1]
    assert corrupt["image"].endswith("d_corrupt.jpg") and corrupt["faces"] == []
    assert "d_corrupt.jpg" in corrupt["error"]
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {corrupt['error']}"
    ]


# -- in this process: killed actor, resume, Parquet ---------------------------------------


@pytest.fixture(scope="module")
def ray_runtime():  # noqa: ANN201
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (requirements-ray.txt)")
    import ray

    try:
        ray_engine.start_local_runtime(num_cpus=2)
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exceptions
        if SLOW_START not in str(exc):
            raise
        pytest.skip(f"Ray could not start on this machine: {exc}")
    yield ray
    ray.shutdown()


class Messages:
    """The CLI's logger, kept."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warn = error = info


def run_engine(argv: list[str], worker_class: type = ray_engine.AlignBatch) -> tuple[int, list]:
    args = face_alignment.build_parser().parse_args(
        ["--engine", "ray", "--threads", "1", "-q", *argv]
    )
    log = Messages()
    return ray_engine.run_ray(args, log, worker_class), log.lines


@pytest.fixture(scope="module")
def many(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve inputs (three copies of the folder), for runs long enough to interrupt."""
    many = tmp_path_factory.mktemp("many")
    for k in range(3):
        for path in sorted(folder.iterdir()):
            shutil.copy(path, many / f"{k}_{path.name}")
    return many


@pytest.fixture(scope="module")
def many_records(many: Path, models: list[str], tmp_path_factory) -> list[dict]:  # noqa: ANN001
    out = tmp_path_factory.mktemp("many_local") / "local.jsonl"
    assert (
        face_alignment.main(["--threads", "1", "-q", *models, "-i", str(many), "--json", str(out)])
        == 1
    )
    return read_jsonl(out)


def killable_worker(marks: Path, delay: float) -> type:
    """AlignBatch that leaves its PID in ``marks`` (``up-PID`` once loaded, ``busy-PID``
    while on a batch) and takes ``delay`` seconds more per batch."""

    class Killable(ray_engine.AlignBatch):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            (marks / f"up-{os.getpid()}").touch()

        def __call__(self, batch: dict) -> dict:
            (marks / f"busy-{os.getpid()}").touch()
            time.sleep(delay)
            return super().__call__(batch)

    return Killable


def test_killed_actor_loses_nothing(
    ray_runtime,
    many: Path,
    models: list[str],
    many_records: list[dict],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "ray.jsonl"
    killed: list[int] = []

    def kill_one_busy_actor() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            busy = sorted(marks.glob("busy-*"))
            if busy:
                pid = int(busy[0].name.split("-")[1])
                os.kill(pid, signal.SIGKILL)  # mid-batch: it sleeps in __call__
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_busy_actor, daemon=True)
    killer.start()
    code, _ = run_engine(
        [*models, "--workers", "2", "-i", str(many), "--json", str(out)],
        killable_worker(marks, delay=1.0),
    )
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    assert code == 1
    records = read_jsonl(out)
    assert_same_records(records, many_records)  # every input once, in order
    started = {p.name.split("-")[1] for p in marks.glob("up-*")}
    assert len(started) >= 3, "the killed actor was not replaced"


def test_resume_continues_a_stopped_run(
    ray_runtime,
    many: Path,
    models: list[str],
    many_records: list[dict],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """A run stopped after 5 records, its last line torn: --resume writes the other 7."""
    out = tmp_path / "ray.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in many_records]
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40], encoding="utf-8")
    code, messages = run_engine(
        [*models, "--workers", "2", "-i", str(many), "--json", str(out), "--resume"]
    )
    assert code == 1
    assert_same_records(read_jsonl(out), many_records)
    assert "resuming: 5 of 12 inputs already written, 7 to go" in messages
    # Nothing left to do: no work, the same exit code (an input failed).
    code, messages = run_engine([*models, "-i", str(many), "--json", str(out), "--resume"])
    assert code == 1 and "resuming: 12 of 12 inputs already written, 0 to go" in messages
    assert len(read_jsonl(out)) == 12


def test_parquet_in_and_out(
    ray_runtime,
    folder: Path,
    models: list[str],
    local_records: list[dict],
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """Image bytes from a Parquet dataset in; a Parquet dataset out, one row per face."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.iterdir())
    source = tmp_path / "images.parquet"
    pq.write_table(
        pa.table(
            {
                "path": [str(p) for p in files],
                "image": pa.array([p.read_bytes() for p in files], pa.binary()),
            }
        ),
        source,
        row_group_size=2,  # two units of work
    )
    out = tmp_path / "faces"
    start = time.monotonic()
    code, _ = run_engine([*models, "--workers", "2", "-i", str(source), "--parquet", str(out)])
    elapsed = time.monotonic() - start
    assert code == 1
    table = pq.read_table(out).to_pylist()
    assert all(set(row) >= {"image", "face", "error", "landmarks"} for row in table)
    # Back to records: the same as the local engine's, read from the files.
    face_keys = next(set(r["faces"][0]) for r in local_records if r["faces"])
    records = []
    for row in table:
        if row["face"] in (None, 0):
            records.append({k: row[k] for k in ("image", "width", "height", "error")})
            records[-1]["faces"] = []
        if row["face"] is not None:
            records[-1]["faces"].append({k: row[k] for k in face_keys})
    assert_same_records(records, local_records)
    # Two row groups, two batches: still one part file (one a minute at most).
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 1 or elapsed > 60, parts
    # Resume on a finished dataset: nothing to add.
    code, messages = run_engine([*models, "-i", str(source), "--parquet", str(out), "--resume"])
    assert code == 1 and "resuming: 4 of 4 inputs already written, 0 to go" in messages
    assert sorted(out.glob("part-*.parquet")) == parts
