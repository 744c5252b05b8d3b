"""Write the README's results (accuracy against the peers, and speed) from the results
files under benchmarks/results/, between its markers, so that the README's figures are
the measured ones, dated, with the machine that measured them.

    python -m tools.readme_results

Sources (each written by the command it names):
- benchmarks/results/accuracy/report.json: ours on 300w/val (python -m benchmarks.run
  --skip-speed --out benchmarks/results/accuracy);
- benchmarks/results/report.json: the peers on the same photos, same protocol (python -m
  benchmarks.run, with benchmarks/requirements.txt installed);
- benchmarks/results/aflw2000/val.md: 3D and head pose on our AFLW2000-3D validation
  faces (python -m training.evaluate_aflw --summary benchmarks/results/aflw2000/val.json),
  and peers.md beside it: the figures measured on the sealed half, which we cannot run;
- benchmarks/results/flip/report.json: each --flip setting's NME and time through the
  command line (python -m benchmarks.flip_tradeoff);
- benchmarks/results/targets/report.json: speed (python -m benchmarks.run --targets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tools.readme_fields import write_block
from training.paths import REPO

RESULTS = REPO / "benchmarks" / "results"
START = "<!-- results:start (python -m tools.readme_results) -->"
END = "<!-- results:end -->"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _machine(report: dict[str, Any]) -> str:
    m = report["machine"]
    return f"{m['date'][:10]}, commit {m['commit']}, {m['cores']} cores {m['processor']}"


def _row(
    name: str, detector: str, errors: list, misses: int, report: dict[str, Any]
) -> str:
    """A table row from the errors of the faces found (a report lists no error for a
    missed face) and the number missed."""
    found = np.asarray(errors, np.float64)
    return (
        f"| {name} | {detector} | {len(found) + misses} | {misses} | "
        f"{100 * found.mean():.2f} % | "
        f"{100 * np.median(found):.2f} % | {100 * np.mean(found > 0.08):.1f} % | "
        f"{_machine(report)} |"
    )


# The accuracy report's system that is the CLI's default for images (benchmarks/accuracy.py).
DEFAULT_SYSTEM = "ours int8, flip auto"


def accuracy_table() -> str:
    ours, peers = _load(RESULTS / "accuracy" / "report.json"), _load(RESULTS / "report.json")
    # The peers were run when val held the 171 HELEN photos only; it now also holds LFPW's,
    # which sort after them, so ours on the peers' photos are the first 171 errors.
    shared = peers["accuracy"]["images"]
    lines = [
        "**2D, 300-W validation photos** (HELEN and LFPW test photos, one annotated face "
        "each; every system end to end with its own detector; NME over the "
        "outer-eye-corner distance, failures above 8 %):",
        "",
        "| system | detector | photos | misses | NME | median | FR@8% | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system in ours["accuracy"]["systems"]:
        if system["name"] == DEFAULT_SYSTEM:
            name = "ours (default for images)"
            if system["metrics"]["misses"]:  # then the first 171 errors are not HELEN's
                raise SystemExit(f"{system['name']} missed faces: rerun with the peers")
            lines.append(_row(name, system["detector"], system["errors_io"], 0, ours))
            lines.append(_row(f"{name}, HELEN only", system["detector"],
                              system["errors_io"][:shared], 0, ours))  # fmt: skip
    for system in peers["accuracy"]["systems"]:
        if not system["name"].startswith("ours"):
            lines.append(_row(system["name"] + ", HELEN only", system["detector"],
                              system["errors_io"], system["metrics"]["misses"], peers))  # fmt: skip
    lines += [
        "",
        "The peers were run before val gained its LFPW photos (peers are optional installs, "
        "`benchmarks/requirements.txt`). dlib's predictor was trained on iBUG 300-W; "
        "whether that includes these HELEN test photos is not known, so its row may have "
        "seen them. MediaPipe's 468 mesh points are mapped to the 68 "
        "(`benchmarks/results/report.md` says how).",
    ]
    return "\n".join(lines)


def flip_table() -> str:
    from benchmarks.flip_tradeoff import markdown

    report = _load(RESULTS / "flip" / "report.json")
    return "\n".join([
        f"**Mirror views, accuracy against time** (300w/val, {report['images']} photos, "
        f"through the command line; {_machine(report)}; `{report['command']}`):",
        "",
        markdown(report),
    ])  # fmt: skip


def speed_lines() -> str:
    report = _load(RESULTS / "targets" / "report.json")
    speed = report["speed"]
    ratio = speed["ratio"]["1"]
    video = speed["video"]["runs"][0]
    folder = speed["folder"]
    return "\n".join([
        f"**Speed** ({_machine(report)}; `python -m benchmarks.run --targets`):",
        "",
        "| what | measured |",
        "| --- | --- |",
        f"| landmark step, 1 thread | {ratio['ours_ms']:.1f} ms ({ratio['shipped']}), "
        f"{ratio['ratio']:.1f}x faster than the FAN-4 network ({ratio['fan4_ms']:.0f} ms) |",
        f"| video 640x480, one face, {video['threads']} threads | {video['fps']:.0f} frames/s |",
        # (reports before --flip auto ran the folder with flip on, and do not say so)
        f"| folder, --flip {folder.get('flip', 'on')}, {folder['threads']} threads | "
        f"{folder['images_per_s']:.1f} "
        f"images/s, memory flat ({folder['rss_growth_mib']:+.1f} MiB over the run) |",
    ])  # fmt: skip


def readme_block() -> str:
    aflw = (RESULTS / "aflw2000" / "val.md").read_text(encoding="utf-8").strip()
    aflw += "\n\n" + (RESULTS / "aflw2000" / "peers.md").read_text(encoding="utf-8").strip()
    parts = [accuracy_table(), flip_table(),
             "**3D and head pose, real faces at every yaw**: " + aflw, speed_lines()]  # fmt: skip
    return f"{START}\n" + "\n\n".join(parts) + f"\n{END}"


def main() -> int:
    return write_block(START, END, readme_block(), "the results")


if __name__ == "__main__":
    raise SystemExit(main())
