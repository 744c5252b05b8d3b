"""Where the shipped data is: the models and the sample image.

In a clone they are the folders ``models/`` and ``samples/`` beside this package; in an
installed package (``pip install .``, see pyproject.toml) the same folders are mapped
inside it, as ``face_alignment/models`` and ``face_alignment/samples``. Everything that
loads a shipped file goes through here, so both layouts work without a copy.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# Installed, the data folders sit in the package; in a clone (or an editable install,
# whose package is this very folder) they sit beside it.
_DATA_ROOT = _PACKAGE if (_PACKAGE / "models").is_dir() else _PACKAGE.parent

MODELS_DIR = _DATA_ROOT / "models"
SAMPLES_DIR = _DATA_ROOT / "samples"
# The 3D shape prior: depth and head pose at run time, 3D labels in training.
SHAPE_PRIOR_PATH = MODELS_DIR / "shape_prior.npz"
