"""Scripts, run from the repository root as `python -m benchmarks.NAME` (the root is then on
sys.path, so they import util and training without path edits)."""
