"""Rewrite the README's settings tables from `bot/config.py` (the test checks they match)."""

from __future__ import annotations

from pathlib import Path

from bot.config import settings_tables


def main() -> None:
    readme = Path(__file__).parents[1] / "README.md"
    text = readme.read_text()
    for name, table in settings_tables().items():
        start, end = f"<!-- settings:{name} -->", f"<!-- /settings:{name} -->"
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{table}\n{end}{tail}"
    readme.write_text(text)


if __name__ == "__main__":
    main()
