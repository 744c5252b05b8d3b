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


def main() -> int:
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(before + readme_block() + after, encoding="utf-8")
    print(f"wrote the field list into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
