"""Write the output schema's field list (util/schema.py) into README.md, between its
markers, so the README says what the writers write.

    python -m tools.readme_fields
"""

from __future__ import annotations

from training.paths import REPO
from util.schema import fields_markdown

START, END = "<!-- fields:start (python -m tools.readme_fields) -->", "<!-- fields:end -->"


def readme_block() -> str:
    return f"{START}\n{fields_markdown()}\n{END}"


def write_block(start: str, end: str, block: str, what: str) -> int:
    """Put ``block`` (markers included) in place of README.md's text from ``start`` to
    ``end``; the README's other generated blocks use this too."""
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(before + block + after, encoding="utf-8")
    print(f"wrote {what} into {path}")
    return 0


def main() -> int:
    return write_block(START, END, readme_block(), "the field list")


if __name__ == "__main__":
    raise SystemExit(main())
