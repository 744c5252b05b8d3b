"""The report: OUT/report.md from the raw numbers of benchmarks/accuracy.py and speed.py,
one function per section, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

from benchmarks.common import (
    FOLDER_IMAGES_PER_S_TARGET,
    FOLDER_RSS_GROWTH_LIMIT_MIB,
    FOLDER_THREADS,
    LANDMARK_SPEEDUP_TARGET,
    REPO,
    VIDEO_FPS_QUIET_TARGET,
    VIDEO_FPS_TARGET,
    VIDEO_THREADS,
    Notes,
    fmt_ms,
    mib,
)
from training.evaluate import FAILURE_THRESHOLD, TABLE_HEADER, format_row


def machine_info() -> dict:
    """Date, commit, CPU, versions and load average: what the absolute times depend on."""
    import onnxruntime

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit or None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_report(
    path: Path,
    info: dict,
    models: list[dict],
    accuracy: dict,
    speed: dict,
    notes: Notes,
    argv: list[str],
) -> None:
    lines = header_lines(info, argv) + model_lines(models)
    if accuracy:
        lines += accuracy_lines(accuracy)
    if speed:
        lines += ["", "## Issue 11's targets", "", "```", *target_summary(speed), "```"]
        lines += stage_lines(speed) + ratio_lines(speed)
        lines += video_lines(speed.get("video")) + folder_lines(speed.get("folder"))
    if notes.lines:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes.lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def target_summary(speed: dict) -> list[str]:
    """Issue 11's three targets, each measured against its target as a ratio (>= 1.00x
    is met), plus the CPU time per frame and image: on a busy machine the wall-clock
    rates say how much CPU the run got, the CPU times how much the work needs."""
    lines = ["issue 11 targets (measured / target; >= 1.00x is met):"]
    ratio = speed.get("ratio", {}).get("1")
    if ratio:
        times = ratio["ratio"]
        lines.append(
            f"  landmark step, 1 thread: FAN-4 fp32 {fmt_ms(ratio['fan4_ms'])} ms / ours "
            f"{ratio.get('shipped')} {fmt_ms(ratio['ours_ms'])} ms = {times:.1f}x, "
            f"target {LANDMARK_SPEEDUP_TARGET:.0f}x: {times / LANDMARK_SPEEDUP_TARGET:.2f}x"
            f" {_met(times, LANDMARK_SPEEDUP_TARGET)}"
        )
        extra = [
            ("FAN-4 int8 / ours int8", ratio.get("ratio_int8")),
            ("ours fp32 / int8", ratio.get("ours_int8_speedup")),
            ("FAN-4 fp32 / int8", ratio.get("fan4_int8_speedup")),
        ]
        lines.append("    also: " + ", ".join(f"{k} {_times(v)}" for k, v in extra))
    else:
        lines.append("  landmark step, 1 thread: not timed (no FAN-4 or no 1-thread run)")
    runs = (speed.get("video") or {}).get("runs", [])
    video = [r for r in runs if not r["depth"] and r["threads"] == VIDEO_THREADS]
    if video and video[0]["fps"]:
        fps = video[0]["fps"]
        lines.append(
            f"  video 640x480, one face, 2D ({video[0].get('model', 'shipped')}), "
            f"{VIDEO_THREADS} threads ({video[0].get('frames_in_flight', 1)} frame(s) in "
            f"flight): {fps:.1f} fps "
            f"({_cpu(video[0].get('cpu_ms_per_frame'))} ms CPU per frame); quiet target "
            f"{VIDEO_FPS_QUIET_TARGET:.0f}: {fps / VIDEO_FPS_QUIET_TARGET:.2f}x "
            f"{_met(fps, VIDEO_FPS_QUIET_TARGET)}, busy target {VIDEO_FPS_TARGET:.0f}: "
            f"{fps / VIDEO_FPS_TARGET:.2f}x {_met(fps, VIDEO_FPS_TARGET)}"
        )
    else:
        lines.append(f"  video, {VIDEO_THREADS} threads: not run")
    folder = speed.get("folder") or {}
    if folder.get("images_per_s"):
        rate = folder["images_per_s"]
        lines.append(
            f"  folder, --flip {folder.get('flip', 'on')}, {FOLDER_THREADS} threads "
            f"({folder.get('workers', 1)} "
            f"worker(s) x {folder.get('session_threads', folder['threads'])} onnxruntime "
            f"thread(s)), {folder['images']} images: {rate:.1f} images/s "
            f"({_cpu(folder.get('cpu_ms_per_image'))} ms CPU per image); target "
            f"{FOLDER_IMAGES_PER_S_TARGET:.0f}: {rate / FOLDER_IMAGES_PER_S_TARGET:.2f}x "
            f"{_met(rate, FOLDER_IMAGES_PER_S_TARGET)}"
        )
        at = folder.get("rss_at", {})
        growth = folder.get("rss_growth_mib")
        flat = (
            ""
            if growth is None
            else "flat"
            if growth <= FOLDER_RSS_GROWTH_LIMIT_MIB
            else "NOT flat"
        )
        lines.append(
            f"    RSS MiB: start {mib(folder.get('rss_start'))}, models loaded "
            f"{mib(folder.get('rss_models_loaded'))}, 10 % {mib(at.get('10%'))}, 50 % "
            f"{mib(at.get('50%'))}, end {mib(at.get('100%'))}, peak "
            f"{mib(folder.get('rss_peak_process'))}; median of the last quarter - second "
            f"quarter: {'-' if growth is None else f'{growth:+.1f}'} MiB "
            f"(limit {FOLDER_RSS_GROWTH_LIMIT_MIB:.0f}) {flat}"
        )
    else:
        lines.append(f"  folder, {FOLDER_THREADS} threads: not run")
    return lines


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _met(value: float | None, target: float) -> str:
    return "" if value is None else "met" if value >= target else "NOT met"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def header_lines(info: dict, argv: list[str]) -> list[str]:
    lines = [
        "# Face alignment benchmark",
        "",
        "`" + " ".join(["python -m benchmarks.run", *argv]) + "`",
        "",
        f"- date {info['date']}, commit {info['commit'] or '?'}",
        f"- {info['cores']} cores ({info['processor']}), {info['platform']}, Python "
        f"{info['python']}, onnxruntime {info['onnxruntime']}",
    ]
    load = info.get("load_average")
    if load:
        lines.append(
            f"- load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}: other "
            "work on the machine slows every absolute time; the ratios are measured in the "
            "same run, interleaved, and hold better"
        )
    return lines


def model_lines(models: list[dict]) -> list[str]:
    lines = ["", "## Models", "", "| model | file | size MB | GMACs |", "| --- | --- | --- | --- |"]
    for m in models:
        size = "-" if m["size_mb"] is None else f"{m['size_mb']:.1f}"
        gmacs = "-" if m["gmacs"] is None else f"{m['gmacs']:.2f}"
        lines.append(f"| {m['name']} | {m['path'] or 'not given'} | {size} | {gmacs} |")
    lines += [
        "",
        "GMACs are counted from each ONNX graph (Conv, Gemm, MatMul; int8 files through "
        "their DequantizeLinear), one face.",
    ]
    return lines


def accuracy_lines(accuracy: dict) -> list[str]:
    from benchmarks.peers import MEDIAPIPE_MAPPING_SOURCE

    systems = accuracy["systems"]
    lines = [
        "",
        f"## Accuracy: {accuracy['data']}",
        "",
        f"{accuracy['images']} images, one annotated face each; every system runs end to "
        "end from the whole image with its own detector, and the detection matching the "
        "annotated face is scored (a miss when none does). NME io: mean point error over "
        "the outer-eye-corner distance; NMEbox: over sqrt of the landmark box area; FR and "
        f"AUC at {100 * FAILURE_THRESHOLD:.0f} % (io). Ours at fp32 and int8 (static U8S8 by "
        "training/quantize.py).",
        "",
        "```",
        TABLE_HEADER,
        *[format_row(e["name"][:28], e["metrics"]) for e in systems],
        "```",
        "",
        "| system | detector | s / image | notes |",
        "| --- | --- | --- | --- |",
    ]
    for e in systems:
        lines.append(
            f"| {e['name']} | {e['detector']} | {e['seconds_per_image']:.3f} | {e['note']} |"
        )
    if accuracy.get("ced"):
        lines += ["", f"![CED]({accuracy['ced']})"]
    if any(e["name"].startswith("MediaPipe") for e in systems):
        lines += ["", f"MediaPipe 468 -> 68: {MEDIAPIPE_MAPPING_SOURCE}."]
    z_rows = [e for e in systems if e["z_error_mean"] is not None]
    if not z_rows:
        return lines
    lines += [
        "",
        "### Depth (z)",
        "",
        "Mean |z error| over sqrt(box area), z zero-mean, against the shape prior fitted to "
        "the annotated 2D points (300-W has no 3D annotation; this is how our depth labels "
        "are made, so it favours our model).",
        "",
        "| system | mean % | median % |",
        "| --- | --- | --- |",
    ]
    for e in z_rows:
        lines.append(
            f"| {e['name']} | {100 * e['z_error_mean']:.2f} | {100 * e['z_error_median']:.2f} |"
        )
    if "z_baseline_mean" in accuracy:
        lines.append(
            f"| z = 0 (baseline) | {100 * accuracy['z_baseline_mean']:.2f} | "
            f"{100 * accuracy['z_baseline_median']:.2f} |"
        )
    return lines


def stage_lines(speed: dict) -> list[str]:
    """Every system's median per stage, a column per thread count."""
    threads = speed["threads"]
    by_thread = [speed["stages"].get(str(t), {}) for t in threads]
    lines = [
        "",
        "## Speed",
        "",
        "### Per stage",
        "",
        f"Median ms per call over up to {speed['reps']} interleaved rounds (slow systems "
        "fewer), after warm-up. Detection: one 640x480 frame with one face; landmarks and "
        "depth: one face (crop, network, decode). Threads: onnxruntime intra-op threads "
        "(MediaPipe: TFLite interpreter threads; dlib is single-threaded). MediaPipe's "
        "detection is our BlazeFace (the ours / detect row); dlib's is its HOG detector, "
        f"upsampled {speed.get('dlib_upsample', 1)}x.",
        "",
        "| system | stage | " + " | ".join(f"{t} thread(s) ms" for t in threads) + " |",
        "| --- | --- | " + " | ".join("---" for _ in threads) + " |",
    ]
    # dicts keep the order of first appearance: systems, then their stages
    names = dict.fromkeys(name for stages in by_thread for name in stages)
    for name in names:
        stage_names = dict.fromkeys(s for stages in by_thread for s in stages.get(name, {}))
        for stage in stage_names:
            cells = [
                fmt_ms(stages.get(name, {}).get(stage, {}).get("median_ms")) for stages in by_thread
            ]
            lines.append(f"| {name} | {stage} | " + " | ".join(cells) + " |")
    return lines


def ratio_lines(speed: dict) -> list[str]:
    """The landmark step of ours and FAN-4 at fp32 and int8, and their ratios."""
    if not speed.get("ratio"):
        return []
    lines = [
        "",
        "### Landmark step: ours vs the FAN-4 architecture, fp32 and int8",
        "",
        "Same runtime, same thread count, same crop and decode code, all in the same "
        f"interleaved rounds; FAN-4 has random weights ({speed['fan4']['gmacs']:.1f} GMACs by "
        "training.model.count_macs). int8: static U8S8 quantization by training/quantize.py, "
        "FAN-4 calibrated on the same training crops as ours. Target: what the tool ships "
        f"at least {LANDMARK_SPEEDUP_TARGET:.0f}x faster than FAN-4 fp32 on 1 thread.",
        "",
        "| threads | ours fp32 ms | ours int8 ms | FAN-4 fp32 ms | FAN-4 int8 ms "
        "| FAN-4 fp32 / ours shipped | FAN-4 fp32 / ours fp32 | FAN-4 int8 / ours int8 "
        "| ours fp32 / int8 | FAN-4 fp32 / int8 | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t, r in speed["ratio"].items():
        target = _met(r["ratio"], LANDMARK_SPEEDUP_TARGET) if t == "1" else ""
        lines.append(
            f"| {t} | {fmt_ms(r.get('ours_fp32_ms'))} | {fmt_ms(r.get('ours_int8_ms'))} "
            f"| {fmt_ms(r['fan4_ms'])} | {fmt_ms(r.get('fan4_int8_ms'))} "
            f"| {r['ratio']:.1f}x ({r.get('shipped', 'fp32')}) "
            f"| {_times(r.get('ratio_fp32'))} | {_times(r.get('ratio_int8'))} "
            f"| {_times(r.get('ours_int8_speedup'))} | {_times(r.get('fan4_int8_speedup'))} "
            f"| {target} |"
        )
    return lines


def video_lines(video: dict | None) -> list[str]:
    if not video:
        return []
    lines = [
        "",
        "### End to end, video",
        "",
        f"{video['file']}, through the video path of face_alignment.py (FaceTracker) with "
        "its defaults (`-v FILE`: read frame, the faces followed from their landmarks and "
        "BlazeFace every 10th frame for new ones, JSON record; no window, no output video; "
        "on two threads or more, two frames in flight on one onnxruntime thread each), "
        "what the tool ships (the 2D model of its video running mode), models loaded and "
        "warmed up first. Target: "
        f"{VIDEO_FPS_TARGET:.0f} fps with the 2D model on 2 threads on a busy machine "
        "(100 on a quiet one).",
        "",
        "| model | threads | frames in flight | frames | faces | fps | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in video["runs"]:
        target = ""
        if r["fps"] is None:
            lines.append(f"| {'2D + depth' if r['depth'] else '2D'} | {r['threads']} | failed |")
            continue
        if not r["depth"] and r["threads"] == 2:
            target = _met(r["fps"], VIDEO_FPS_TARGET)
        lines.append(
            f"| {'2D + depth' if r['depth'] else '2D'} {r.get('model', r.get('precision', ''))} | "
            f"{r['threads']} | {r.get('frames_in_flight', 1)} | {r['frames']} | {r['faces']} | "
            f"{r['fps']:.1f} | {target} |"
        )
    return lines


def folder_lines(folder: dict | None) -> list[str]:
    """Throughput and resident memory along the run: flat memory means the RSS at 10, 50
    and 100 % of the images stays near the RSS after the models loaded."""
    if not folder:
        return []
    at = folder.get("rss_at", {})
    prefetch = folder.get("prefetch")
    return [
        "",
        "### Folder of images",
        "",
        f"{folder['images']} JPEGs made from the annotated images (copies, mirrors, 0.6x, "
        "rotated 10 degrees), run by FaceAligner.iter_paths (the CLI's folder path: flip on, "
        f"2D model at {folder.get('precision', 'fp32')}, {folder['threads']} threads"
        + (f", reading and detecting {prefetch} images ahead" if prefetch else "")
        + f") in a fresh process. Target: {FOLDER_IMAGES_PER_S_TARGET:.0f} images/s.",
        "",
        "| images/s | target | faces | errors | RSS after load MiB | at 10 % | at 50 % "
        "| at 100 % | peak sampled | peak of the process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {folder['images_per_s']:.1f} "
        f"| {_met(folder['images_per_s'], FOLDER_IMAGES_PER_S_TARGET)} "
        f"| {folder['faces']} | {folder['errors']} | {mib(folder['rss_models_loaded'])} "
        f"| {mib(at.get('10%'))} | {mib(at.get('50%'))} | {mib(at.get('100%'))} "
        f"| {mib(folder['rss_peak_sampled'])} | {mib(folder['rss_peak_process'])} |",
    ]
