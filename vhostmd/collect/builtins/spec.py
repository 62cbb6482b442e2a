"""What a built-in collector is: the record each of host.py and vm.py lists its built-ins in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...metric_types import INTEGER_RANGES, REAL_LIMITS, Value

#: Value kinds, and the metric types each may be published as.
KIND_TYPES: dict[str, tuple[str, ...]] = {
    "int": (*INTEGER_RANGES, *REAL_LIMITS, "string"),
    "real": (*REAL_LIMITS, "string"),
    "string": ("string",),
}


@dataclass(frozen=True)
class Builtin:
    """A built-in collector."""

    name: str
    context: str
    #: "int", "real" or "string": what read() returns.
    kind: str
    #: How many values it gives (a ``group`` metric takes one per variable).
    values: int
    read: Callable[[object], Value | tuple[Value, ...]]
    #: Unit of the value, for the documentation.
    unit: str
    doc: str
    #: Host sources (see host_sources) or vm stats groups (see domain_stats).
    needs: frozenset[str] = frozenset()

    def type_error(self, type_: str) -> str | None:
        """Why a metric of *type_* cannot publish this built-in, or None."""
        if type_ in ("group", "xml"):
            return None  # the value count decides (checked by the config)
        if type_ not in KIND_TYPES[self.kind]:
            allowed = ", ".join(KIND_TYPES[self.kind])
            return f"builtin {self.name!r} gives a {self.kind} value; type {type_} needs one of: {allowed}"
        return None
