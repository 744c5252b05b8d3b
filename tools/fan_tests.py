"""Run the FAN library's own test suite (../shared/fan_tests, verbatim) against the
installed ``face_alignment`` package, as FAN's CI runs it: from a copy of its folder,
with torch installed, so that ``import face_alignment`` is the installed package and not
a clone's folder.

    pip install . && python -m tools.fan_tests

Three of its tests are left out: they compare with the coordinates FAN's own weights
give (atol 0.07 px), which other weights cannot match. tests/test_fan_api.py checks the
same calls' structure with a loose tolerance.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from training.paths import REPO

FAN_TESTS = REPO.parent / "shared" / "fan_tests"
FAN_WEIGHTS_ONLY = (
    "test/facealignment_test.py::Tester::test_predict_points",
    "test/facealignment_test.py::Tester::test_predict_batch_points",
    "test/facealignment_test.py::Tester::test_predict_points_from_dir",
)


def main() -> int:
    if not FAN_TESTS.is_dir():
        print(f"{FAN_TESTS}: not here; the FAN test suite is not run")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fan_tests"
        shutil.copytree(FAN_TESTS, folder)
        where = subprocess.run(
            [sys.executable, "-c", "import face_alignment; print(face_alignment.__file__)"],
            cwd=folder, capture_output=True, text=True,
        )  # fmt: skip
        # Installed: a package in site-packages (the venv may sit inside the clone), not
        # the clone's face_alignment.py or util/.
        if where.returncode != 0 or "site-packages" not in Path(where.stdout.strip()).parts:
            print(f"face_alignment is not installed here ({where.stdout.strip() or where.stderr})")
            return 2
        print(f"FAN's tests against {where.stdout.strip()}", flush=True)
        deselect = [arg for test in FAN_WEIGHTS_ONLY for arg in ("--deselect", test)]
        command = [sys.executable, "-m", "pytest", "test", "-q", "-p", "no:cacheprovider",
                   *deselect]  # fmt: skip
        return subprocess.run(command, cwd=folder).returncode


if __name__ == "__main__":
    raise SystemExit(main())
