"""Tools the model can call during a call: their schemas, and running the custom ones.

Built in: `end_call` and `transfer_call` (the call session carries them out). Custom tools
come from a Python module named in `BOT_TOOLS`: every public `async def` in it is a tool.
Its JSON schema is generated from the signature, its description and parameter
descriptions from the docstring (Google style). Example: `bot/example_tools.py`.

A tool that returns a `Disclosure` has its words said to the caller exactly, and with
`INTERRUPTIONS=confirm` uninterruptibly ("this call is recorded"): the answer that says
them plays to its end, while what the caller says still reaches the model.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin

from bot.call.core.actions import BUILTIN_TOOLS, END_CALL, TRANSFER_CALL
from bot.errors import ConfigError

__all__ = ["Disclosure", "Tool", "ToolOutcome", "builtin_schemas", "load_tools", "schema_of"]

ToolFunction = Callable[..., Awaitable[Any]]

_SCALARS: Final[dict[type, str]] = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Disclosure:
    """What a tool returns for words the caller must hear in full."""

    words: str


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    function: ToolFunction

    @property
    def schema(self) -> dict[str, object]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    async def run(self, arguments: str, timeout_s: float) -> ToolOutcome:
        """Call the tool with the model's JSON arguments; never raises."""
        started = asyncio.get_running_loop().time()
        disclosure = None
        try:
            parsed = json.loads(arguments or "{}")
            if not isinstance(parsed, dict):
                raise ValueError("arguments must be a JSON object")
            kwargs = self._check(parsed)
            result = await asyncio.wait_for(self.function(**kwargs), timeout_s)
            if isinstance(result, Disclosure):
                disclosure = result.words.strip() or None
                result = {"said_to_caller": result.words}
            output = json.dumps(result, default=str)
            error = None
        except TimeoutError:
            error = f"{self.name} took longer than {timeout_s:g} s"
        except (ValueError, TypeError) as exc:
            error = f"bad arguments: {exc}"
        except Exception as exc:  # a tool's own failure must not end the call
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            output = json.dumps({"error": error})
        elapsed_ms = int((asyncio.get_running_loop().time() - started) * 1000)
        return ToolOutcome(output, error, elapsed_ms, disclosure if error is None else None)

    def _check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = self.parameters["properties"]
        unknown = set(arguments) - set(properties)
        if unknown:
            raise ValueError(f"unknown argument(s) {', '.join(sorted(unknown))}")
        missing = [name for name in self.parameters["required"] if name not in arguments]
        if missing:
            raise ValueError(f"missing argument(s) {', '.join(missing)}")
        for name, value in arguments.items():
            expected = properties[name].get("type")
            if expected and not _matches(value, expected):
                raise ValueError(f"{name} must be {expected}")
        return arguments


@dataclass(frozen=True)
class ToolOutcome:
    output: str  # JSON text for the model
    error: str | None
    duration_ms: int
    disclosure: str | None = None  # words to say in full, from a `Disclosure`


def _matches(value: Any, expected: str | list[str]) -> bool:
    kinds = [expected] if isinstance(expected, str) else expected
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    return any(checks[kind](value) for kind in kinds if kind in checks)


def schema_of(annotation: Any) -> dict[str, Any]:
    """JSON schema of a parameter annotation (str, int, float, bool, Literal, list, Optional)."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = get_origin(annotation)
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": _SCALARS[type(values[0])], "enum": values}
    if origin in (list, tuple, set, frozenset):
        args = get_args(annotation)
        return {"type": "array", "items": schema_of(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            inner = schema_of(options[0])
            return {**inner, "type": [inner["type"], "null"]}
    raise TypeError(f"unsupported parameter type {annotation!r}")


def _docstring_parts(function: ToolFunction) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(function) or ""
    summary, _, rest = doc.partition("\n\n")
    descriptions: dict[str, str] = {}
    args = re.search(r"^Args:\n((?:[ \t]+.*\n?)+)", rest, re.MULTILINE)
    if args:
        for line in args.group(1).splitlines():
            match = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
            if match:
                descriptions[match.group(1)] = match.group(2).strip()
    return " ".join(summary.split()), descriptions


def tool_from_function(function: ToolFunction) -> Tool:
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{function.__name__} must be an async function")
    summary, descriptions = _docstring_parts(function)
    if not summary:
        raise TypeError(f"{function.__name__} needs a docstring: the model reads it")
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name not in hints:
            raise TypeError(f"{function.__name__}: parameter {name} needs a type annotation")
        properties[name] = schema_of(hints[name])
        if name in descriptions:
            properties[name]["description"] = descriptions[name]
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    return Tool(
        function.__name__,
        summary,
        {"type": "object", "properties": properties, "required": required},
        function,
    )


def load_tools(module_name: str | None) -> dict[str, Tool]:
    """The custom tools of `module_name`.

    Raises:
        ConfigError: the module cannot be imported, or a tool cannot be described.
    """
    if not module_name:
        return {}
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a settings problem
        raise ConfigError(
            [f"BOT_TOOLS={module_name}: cannot import it ({type(exc).__name__}: {exc})"]
        ) from exc
    tools: dict[str, Tool] = {}
    problems: list[str] = []
    for name, member in vars(module).items():
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        if getattr(member, "__module__", None) != module.__name__:
            continue  # imported from elsewhere
        if name in BUILTIN_TOOLS:
            problems.append(f"BOT_TOOLS={module_name}: {name} is a built-in tool name")
            continue
        try:
            tools[name] = tool_from_function(member)
        except TypeError as exc:
            problems.append(f"BOT_TOOLS={module_name}: {exc}")
    if problems:
        raise ConfigError(problems)
    if not tools:
        raise ConfigError([f"BOT_TOOLS={module_name}: the module has no public async functions"])
    return tools


def builtin_schemas(*, transfer: bool) -> list[dict[str, object]]:
    reason = {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why, in a few words."}},
        "required": [],
    }
    schemas: list[dict[str, object]] = [
        {
            "type": "function",
            "name": END_CALL,
            "description": "Hang up. Say goodbye first: the call ends once your last words "
            "have played.",
            "parameters": reason,
        }
    ]
    if transfer:
        schemas.append(
            {
                "type": "function",
                "name": TRANSFER_CALL,
                "description": "Transfer the caller to a person. Tell the caller first; the "
                "transfer starts once your last words have played.",
                "parameters": reason,
            }
        )
    return schemas
