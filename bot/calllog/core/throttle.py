"""How many password guesses review allows: token buckets per client address and for everyone.

A guess takes a token before the password is compared, so a hundred guesses sent at once
get the same few tries as a hundred sent in a row; a right password gives its token back.
Each address has its own bucket, and all of them draw on a global one as well, so guessing
from many addresses is slowed down too. An attacker can then lock out the rightful user
for a minute or so, which is the price of not letting a password be guessed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = ["Bucket", "LoginThrottle"]

_MAX_ADDRESSES: Final = 10_000  # the least recently seen are forgotten: a full bucket


@dataclass
class Bucket:
    capacity: float
    per_second: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
        self.updated = now

    def wait_s(self) -> float:
        """How long until a token is there."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second


class LoginThrottle:
    def __init__(
        self,
        per_address: int = 10,
        per_address_per_minute: float = 10,
        overall: int = 30,
        overall_per_minute: float = 30,
    ) -> None:
        self._address_size = (float(per_address), per_address_per_minute / 60)
        self._overall = Bucket(float(overall), overall_per_minute / 60, float(overall), 0.0)
        self._addresses: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, address: str, now: float) -> float:
        """Take a try for `address`: 0 when it may try now, else the seconds to wait."""
        bucket = self._address(address, now)
        self._overall.refill(now)
        wait = max(bucket.wait_s(), self._overall.wait_s())
        if wait > 0:
            return wait
        bucket.tokens -= 1
        self._overall.tokens -= 1
        return 0.0

    def give_back(self, address: str, now: float) -> None:
        """The try was right: it does not count."""
        bucket = self._address(address, now)
        bucket.tokens = min(bucket.capacity, bucket.tokens + 1)
        self._overall.tokens = min(self._overall.capacity, self._overall.tokens + 1)

    def _address(self, address: str, now: float) -> Bucket:
        bucket = self._addresses.pop(address, None)
        if bucket is None:
            capacity, rate = self._address_size
            bucket = Bucket(capacity, rate, capacity, now)
        bucket.refill(now)
        self._addresses[address] = bucket
        while len(self._addresses) > _MAX_ADDRESSES:
            self._addresses.popitem(last=False)
        return bucket
