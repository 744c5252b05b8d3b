"""The face-alignment library: one module per stage (see README.md, "How it works")."""

# The one place the version is written; `face_alignment.py --version` prints it.
__version__ = "0.1.0"
