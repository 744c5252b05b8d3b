"""Does a change keep every output the same? Run the command line on the same inputs from
this working tree and from a git revision, and compare their JSON records.

    python -m tools.compare_outputs --ref HEAD -- -i ../shared/data/300w/val -3

Everything after ``--`` goes to face_alignment.py (``--json`` and ``-q`` are added). The
revision is checked out into a temporary git worktree, which is removed afterwards.
Exit code 0 when every record is the same, 1 when some differ (each is listed with the
first field that differs), 2 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_cli(root: Path, cli_args: list[str], out: Path) -> None:
    """face_alignment.py of the tree at ``root`` with ``cli_args``, its JSON to ``out``.
    Relative input paths are taken from this tree's root in both runs."""
    command = [sys.executable, str(root / "face_alignment.py"), *cli_args, "--json", str(out), "-q"]
    subprocess.run(command, cwd=REPO, check=True)


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The path of the first value that differs between two JSON values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key} (only in one)"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} (length {len(a)} against {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where} ({a!r} against {b!r})"


def compare(ours: Path, theirs: Path) -> list[tuple[str, str]]:
    """(input, first difference) of every record that differs, matched by image and frame."""

    def records(path: Path) -> dict[tuple, dict]:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return {(row.get("image"), row.get("frame")): row for row in rows}

    a, b = records(ours), records(theirs)
    differences = []
    for key in sorted(set(a) | set(b), key=str):
        if key not in a or key not in b:
            differences.append((str(key[0]), "record only in one run"))
            continue
        found = first_difference(a[key], b[key])
        if found:
            differences.append((str(key[0]), found))
    return differences


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="git revision to compare with")
    args = parser.parse_args(argv[:split])
    cli_args = argv[split + 1 :]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.ref],
                       cwd=REPO, check=True)  # fmt: skip
        try:
            run_cli(REPO, cli_args, Path(tmp) / "ours.jsonl")
            run_cli(tree, cli_args, Path(tmp) / "theirs.jsonl")
        except subprocess.CalledProcessError as exc:
            print(f"a run failed (exit code {exc.returncode})", file=sys.stderr)
            return 2
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO,
                           check=False)  # fmt: skip
        differences = compare(Path(tmp) / "ours.jsonl", Path(tmp) / "theirs.jsonl")
        total = len(Path(tmp, "ours.jsonl").read_text(encoding="utf-8").splitlines())
    for image, what in differences:
        print(f"{image}: {what}")
    print(f"{total - len(differences)} of {total} records the same as {args.ref}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
