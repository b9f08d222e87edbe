from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest

from bot.call.tools import Disclosure, builtin_schemas, load_tools, tool_from_function
from bot.errors import ConfigError


async def book(
    day: Literal["mon", "tue"], people: int, note: str | None = None, tags: list[str] | None = None
) -> dict[str, object]:
    """Book a table.

    Args:
        day: Which day.
        people (int): How many guests.
    """
    return {"day": day, "people": people}


def test_schema_comes_from_the_signature_and_docstring() -> None:
    tool = tool_from_function(book)
    assert tool.schema == {
        "type": "function",
        "name": "book",
        "description": "Book a table.",
        "parameters": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "enum": ["mon", "tue"], "description": "Which day."},
                "people": {"type": "integer", "description": "How many guests."},
                "note": {"type": ["string", "null"]},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            },
            "required": ["day", "people"],
        },
    }


async def test_running_a_tool_checks_arguments_and_never_raises() -> None:
    tool = tool_from_function(book)
    ok = await tool.run('{"day": "mon", "people": 2}', timeout_s=1)
    assert json.loads(ok.output) == {"day": "mon", "people": 2} and ok.error is None
    for bad in (
        '{"day": "mon"}',
        '{"day": "mon", "people": "two"}',
        "[1]",
        "not json",
        '{"x": 1, "day": "mon", "people": 1}',
    ):
        outcome = await tool.run(bad, timeout_s=1)
        assert outcome.error is not None and "error" in json.loads(outcome.output)


def write_module(tmp_path: Path, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))
    return name


async def test_a_tool_that_raises_or_hangs_gives_the_model_an_error(tmp_path: Path) -> None:
    name = write_module(
        tmp_path,
        "flaky_tools",
        '''
        import asyncio

        async def explode(order_id: str) -> str:
            """Always fails."""
            raise RuntimeError("database down")

        async def hang() -> str:
            """Never answers."""
            await asyncio.sleep(10)
            return "late"
        ''',
    )
    tools = load_tools(name)
    boom = await tools["explode"].run('{"order_id": "1"}', timeout_s=1)
    assert boom.error == "RuntimeError: database down"
    slow = await tools["hang"].run("{}", timeout_s=0.05)
    assert slow.error is not None and "longer than" in slow.error


def test_a_module_that_fails_to_import_is_a_clear_config_error(tmp_path: Path) -> None:
    name = write_module(tmp_path, "broken_tools", "import does_not_exist\n")
    with pytest.raises(ConfigError, match="BOT_TOOLS=broken_tools: cannot import it"):
        load_tools(name)
    with pytest.raises(ConfigError, match="cannot import it"):
        load_tools("no.such.module")
    bad = write_module(
        tmp_path,
        "undocumented_tools",
        """
        async def a(x: str) -> str:
            return x

        async def end_call() -> None:
            '''Clashes with a built-in.'''

        async def b(x) -> str:
            '''No annotation.'''
            return x
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_tools(bad)
    assert len(caught.value.problems) == 3


async def test_the_example_order_tool() -> None:
    tools = load_tools("bot.example_tools")
    assert list(tools) == ["get_order_status"]
    found = json.loads((await tools["get_order_status"].run('{"order_id": "4417"}', 1)).output)
    assert found == {
        "found": True,
        "order_id": "4417",
        "status": "shipped",
        "carrier": "UPS",
        "eta": "Friday",
    }
    missing = json.loads((await tools["get_order_status"].run('{"order_id": "1"}', 1)).output)
    assert missing["found"] is False


def test_builtin_tools() -> None:
    assert [t["name"] for t in builtin_schemas(transfer=False)] == ["end_call"]
    assert [t["name"] for t in builtin_schemas(transfer=True)] == ["end_call", "transfer_call"]


async def test_a_disclosure_is_said_exactly_and_the_model_is_told_so() -> None:
    async def recording_notice() -> Disclosure:
        """Tell the caller the call is recorded."""
        return Disclosure("This call is recorded.")

    outcome = await tool_from_function(recording_notice).run("{}", 1.0)
    assert outcome.disclosure == "This call is recorded."
    assert json.loads(outcome.output) == {"said_to_caller": "This call is recorded."}

    async def blank() -> Disclosure:
        """Nothing to say."""
        return Disclosure("  ")

    assert (await tool_from_function(blank).run("{}", 1.0)).disclosure is None
