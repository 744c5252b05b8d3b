"""Where things are for the scripts and tests that run from a clone: the repository, its
models, and the shared data beside it (``../shared/data``, read-only, never copied in).

Training, evaluation, the benchmarks, the tools and the tests all take their folders
from here, so the layout is written once. It lives in ``training/`` and not in
``util/paths.py`` on purpose: ``util`` is the installed package, which must not depend on
the repository's layout; the shared data (and the repository root) are facts of a
clone only. The models folder is the package's own (``util.paths.MODELS_DIR``, right
installed and in a clone), re-exported so that a script needs one import.
"""

from __future__ import annotations

from pathlib import Path

from util.paths import MODELS_DIR, SAMPLES_DIR, SHAPE_PRIOR_PATH

__all__ = [
    "DATA_300W",
    "DATA_ROOT",
    "MODELS_DIR",
    "REPO",
    "SAMPLES_DIR",
    "SHAPE_PRIOR_PATH",
    "VAL_300W",
]

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data"
DATA_300W = DATA_ROOT / "300w"  # train/ and val/: NAME.jpg + NAME.pts
VAL_300W = DATA_300W / "val"
