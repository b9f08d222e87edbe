"""`@statically_frozen`: a slotted dataclass that type checkers hold frozen, without the
runtime cost of `frozen=True`.

A frozen dataclass sets each field in `__init__` through `object.__setattr__`: 1.2 µs for
a three-field message instead of 0.3 µs. The messages of the audio path are made 200 times
a second per call; mypy still rejects any assignment to their fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["statically_frozen"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def statically_frozen(cls: type[T]) -> type[T]:
    # Hashable like a frozen dataclass; nothing mutates these (mypy sees to it).
    return dataclass(slots=True, unsafe_hash=True)(cls)
