"""The face-alignment library: one module per stage (see README.md, "How it works").

Installed (``pip install .``) this folder is the package ``face_alignment``; in a clone
it is ``util``, and ``face_alignment.py`` forwards the same public names. Importing
loads no model: models load when a ``FaceAligner`` is made.
"""

from .aligner import FaceAligner
from .draw import draw_faces, with_side_view
from .face import Face, StageTimes
from .fan_api import FaceAlignment, LandmarksType, NetworkSize
from .io import InputError, read_image
from .landmarks import NUM_LANDMARKS, read_pts, write_pts
from .runtime import ModelError, limit_heap_growth
from .tracker import FaceTracker

# The one place the version is written; `face_alignment.py --version` and the package
# metadata (pyproject.toml) read it. It is the FAN library's API version this package
# implements (code written for FAN checks it), as FAN's own __version__ would be.
__version__ = "1.5.0"

__all__ = [
    "NUM_LANDMARKS",
    "Face",
    "FaceAligner",
    "FaceAlignment",
    "FaceTracker",
    "InputError",
    "LandmarksType",
    "ModelError",
    "NetworkSize",
    "StageTimes",
    "__version__",
    "draw_faces",
    "limit_heap_growth",
    "read_image",
    "read_pts",
    "with_side_view",
    "write_pts",
]
