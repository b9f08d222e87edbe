"""The layout keeps its promises: pure cores stay pure, only the adapters touch socket
libraries, every module says its one job, and the README's map is the real tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BOT = ROOT / "bot"

# What a pure core may import: computation, no I/O, no clock, no event loop.
PURE_STDLIB = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "collections.abc",
    "csv",
    "dataclasses",
    "datetime",
    "enum",
    "hashlib",
    "hmac",
    "io",
    "ipaddress",
    "json",
    "math",
    "re",
    "string",
    "typing",
    "urllib.parse",
    "warnings",
    "xml.sax.saxutils",
    "zoneinfo",  # time zone rules: data, not a clock
}
PURE_LIBRARIES = {"numpy", "numpy.typing", "soxr", "audioop", "orjson", "pybase64"}


def modules() -> list[Path]:
    return sorted(path for path in BOT.rglob("*.py") if "migrations" not in path.parts)


def is_pure_core(path: Path) -> bool:
    """`bot/core/` and every feature's `core/` package."""
    parts = path.relative_to(BOT).parts
    return parts[0] == "core" or (len(parts) > 2 and parts[1] == "core")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def allowed_in_a_pure_core(module: str) -> bool:
    if module in PURE_STDLIB or module in PURE_LIBRARIES or module == "bot.errors":
        return True
    parts = module.split(".")
    return parts[:2] == ["bot", "core"] or (
        len(parts) > 2 and parts[0] == "bot" and parts[2] == "core"
    )


PURE = [path for path in modules() if is_pure_core(path)]


def test_there_are_pure_cores_to_check() -> None:
    names = {str(path.relative_to(BOT)) for path in PURE}
    assert {"core/codec.py", "call/core/session.py", "localrt/core/session.py"} <= names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(BOT)))
def test_a_pure_core_imports_no_io_and_no_shell(path: Path) -> None:
    offending = sorted(m for m in imports(path) if not allowed_in_a_pure_core(m))
    assert offending == [], f"{path.relative_to(ROOT)} imports {offending}"


def test_the_purity_check_bites() -> None:
    """A control: modules of the shell fail the same check."""
    for shell in ("call/loop.py", "calllog/writer.py", "localrt/runner.py"):
        assert not all(allowed_in_a_pure_core(m) for m in imports(BOT / shell)), shell


def test_only_the_adapters_import_socket_libraries() -> None:
    users = {
        str(path.relative_to(BOT))
        for path in modules()
        if any(m.split(".")[0] in ("websockets", "wsproto", "picows") for m in imports(path))
    }
    # The two sockets' adapters, and the phone simulator (a Twilio of its own).
    assert users == {"call/realtime_socket.py", "call/twilio_socket.py", "simulator.py"}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(BOT)))
def test_every_module_opens_with_its_job_in_a_sentence(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path.relative_to(ROOT)} has no docstring"
    first = docstring.split("\n\n", 1)[0]
    assert first.rstrip().endswith((".", ":")), f"{path.relative_to(ROOT)}: {first!r}"


def readme_map() -> dict[str, set[str]]:
    """Each folder the README's map shows, with the module and folder names on its rows."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    shown: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        rest = line
        if not line.startswith(" "):
            paths = re.findall(r"\b((?:bot|tests|scripts|twiml)/[\w./]*)", line)
            for path in paths:
                shown.setdefault(path, set())
            folder = paths[0] if paths and paths[0].endswith("/") else ""
            rest = line[len(paths[0]) :] if paths else line
        if folder.startswith("bot/"):
            shown[folder] |= set(re.findall(r"(?<![/\w])(\w+\.py|\w+/)", rest))
    return shown


def test_the_readme_map_names_every_folder_and_module_that_exists() -> None:
    shown = readme_map()
    for path in shown:
        assert (ROOT / path).exists(), f"the README's map names {path}, which does not exist"
    packages = {
        path.parent for path in BOT.rglob("__init__.py") if "migrations" not in path.parts
    } - {BOT}
    for package in packages:
        name = str(package.relative_to(ROOT)) + "/"
        assert name in shown, f"the README's map leaves out {name}"
        present = {p.name for p in package.glob("*.py") if p.name != "__init__.py"} | {
            f"{d.name}/" for d in package.iterdir() if d.is_dir() and d.name != "__pycache__"
        }
        present -= {f"{sub.name}/" for sub in packages if sub.parent == package}
        named = shown[name]
        assert named == present, (
            f"{name} in the README's map: missing {sorted(present - named)}, "
            f"no such {sorted(named - present)}"
        )
    top = {
        f"bot/{p.name}" for p in BOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    }
    assert top <= set(shown), f"the README's map leaves out {sorted(top - set(shown))}"
