"""Unique members of a set, mergeable: exact while small, then HyperLogLog.

Why a sketch: a worker cannot keep every member of a high-cardinality set
(user ids), and two workers' unique counts cannot be added; two sketches
can be merged into the one sketch of the union.

Exact (a Python set) up to ``max_exact`` members, then HyperLogLog with
``2 ** precision`` one-byte registers (precision 14: 16 KiB, standard error
``1.04 / sqrt(2 ** 14)`` = 0.81 %), 64-bit BLAKE2b hashes and Ertl's improved
raw estimator (O. Ertl, "New cardinality estimation algorithms for
HyperLogLog sketches", 2017), which needs no bias tables and is unbiased from
0 to billions. Merging takes the register-wise maximum (exact: the union).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .summary import SetSketchDict

__all__ = ["SetSketch", "DEFAULT_SET_MAX_EXACT", "DEFAULT_PRECISION"]

DEFAULT_SET_MAX_EXACT = 1000
DEFAULT_PRECISION = 14


def _member_hash(member: str | int) -> int:
    """A 64-bit hash that is the same in every process (unlike hash()), strings and ints apart."""
    data = (b"s" + member.encode("utf-8")) if isinstance(member, str) else (b"i" + str(member).encode())
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _sigma(x: float) -> float:
    if x == 1:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x == 0 or x == 1:
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == previous:
            return z / 3


class SetSketch:
    """Unique members of a set: exact up to ``max_exact``, then HyperLogLog (module docstring)."""

    __slots__ = ("max_exact", "precision", "members", "registers")

    def __init__(self, max_exact: int = DEFAULT_SET_MAX_EXACT, precision: int = DEFAULT_PRECISION) -> None:
        if not 4 <= precision <= 18:
            raise ValueError(f"precision must be in [4, 18], got {precision!r}")
        self.max_exact, self.precision = max_exact, precision
        #: the members while exact (None once sketched)
        self.members: set[str | int] | None = set()
        #: HyperLogLog's registers once past max_exact (empty while exact)
        self.registers = bytearray()

    @property
    def exact(self) -> bool:
        return self.members is not None

    @property
    def standard_error(self) -> float:
        """0 while exact, else HyperLogLog's 1.04 / sqrt(registers)."""
        return 0.0 if self.members is not None else 1.04 / math.sqrt(1 << self.precision)

    def add(self, member: str | int) -> None:
        self.update((member,))

    def update(self, members: Iterable[str | int]) -> None:
        """Add members (strings or integers; 99 and "99" are different members)."""
        if self.members is not None:
            self.members.update(members)
            if len(self.members) <= self.max_exact:
                return
            members, self.members = self.members, None
            self.registers = bytearray(1 << self.precision)
        registers, p = self.registers, self.precision
        bits = 64 - p
        mask = (1 << bits) - 1
        for member in members:
            h = _member_hash(member)
            index, rest = h >> bits, h & mask
            rank = bits - rest.bit_length() + 1
            if rank > registers[index]:
                registers[index] = rank

    def merge(self, other: SetSketch) -> SetSketch:
        """The union of both (in place; returns self). Precisions must match."""
        if other.members is not None:
            self.update(other.members)
            return self
        if other.precision != self.precision:
            raise ValueError(f"cannot merge precision {other.precision} into {self.precision}")
        if self.members is not None:
            members, self.members = self.members, None
            self.registers = bytearray(1 << self.precision)
            self.update(members)
        mine = self.registers
        for i, rank in enumerate(other.registers):
            if rank > mine[i]:
                mine[i] = rank
        return self

    @property
    def count(self) -> int:
        """The number of unique members: exact, or HyperLogLog's estimate (rounded)."""
        if self.members is not None:
            return len(self.members)
        m, bits = 1 << self.precision, 64 - self.precision
        histogram = [0] * (bits + 2)
        for rank in self.registers:
            histogram[rank] += 1
        z = m * _tau(1 - histogram[bits + 1] / m)
        for k in range(bits, 0, -1):
            z = 0.5 * (z + histogram[k])
        z += m * _sigma(histogram[0] / m)
        return round(m * m / (2 * math.log(2)) / z)

    def to_dict(self) -> SetSketchDict:
        """``{"exact": True, "count", "members"}`` or ``{"exact": False, "count", "precision", "registers"}``
        (registers: base64 of one byte each)."""
        if self.members is not None:
            members = sorted(self.members, key=lambda m: (isinstance(m, str), m))
            return {"exact": True, "count": len(members), "members": members}
        return {
            "exact": False,
            "count": self.count,
            "precision": self.precision,
            "registers": base64.b64encode(bytes(self.registers)).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_exact: int = DEFAULT_SET_MAX_EXACT) -> SetSketch:
        try:
            if data.get("exact", "members" in data):
                sketch = cls(max_exact=max_exact)
                sketch.update(data["members"])
                return sketch
            sketch = cls(max_exact=max_exact, precision=int(data["precision"]))
            registers = base64.b64decode(data["registers"], validate=True)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a set sketch dict: {error!r}") from None
        if len(registers) != 1 << sketch.precision:
            raise ValueError("set sketch registers do not match its precision")
        sketch.members, sketch.registers = None, bytearray(registers)
        return sketch

    def __repr__(self) -> str:
        mode = "exact" if self.members is not None else f"HyperLogLog p={self.precision}"
        return f"<SetSketch {mode}, count {self.count}>"
