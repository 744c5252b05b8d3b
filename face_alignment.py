"""Face alignment: the 68 iBUG landmarks, in 2D and 3D, of every face.

    python3 face_alignment.py                         # the bundled sample -> output.png
    python3 face_alignment.py -i photo.jpg -s out.png --active-3d
    python3 face_alignment.py -h                      # every option

Runs the command line (util/cli.py) from a clone; installed, the same is the
``face-alignment`` command. Imported from a clone, this module gives the library's
public API by name (``face_alignment.FaceAligner``, ``face_alignment.FaceAlignment``),
as the installed package ``face_alignment`` does: the library is the folder util/,
which pyproject.toml installs under that name.
"""

from __future__ import annotations

import sys

import util
from util.cli import main

__all__ = [*util.__all__, "main"]


def __getattr__(name: str) -> object:
    # Forwarded, not copied, so that this module and the installed package can never
    # disagree on the public names.
    try:
        return getattr(util, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    sys.exit(main())
