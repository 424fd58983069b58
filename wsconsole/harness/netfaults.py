"""Network faults the balancer applies to proxied connections, live and reversibly.

A fault targets one backend id or ``"all"`` (every backend, including ones added later); a
backend's own fault of a kind overrides an ``"all"`` fault of the same kind. At most one fault of
each kind is active per target; setting it again replaces it. Directions are seen from the
client: ``up`` is client -> backend, ``down`` is backend -> client.

Kinds and parameters (the wire form is ``{"kind": KIND, **params}``):

``latency``   ``ms`` (>= 0), ``jitter_ms`` (>= 0, default 0). Every chunk, in each direction, is
              delayed by ``ms`` plus a uniform 0..``jitter_ms``; order is kept (a chunk never
              overtakes an earlier one), so a round trip gains about ``2 * ms``.
``bandwidth`` ``bytes_per_s`` (> 0). A token bucket per connection and direction (burst: 1/20 s
              worth of bytes, at least 1 byte) caps each direction's throughput.
``reset``     ``persist`` (bool, default false). Every open connection of the target is reset now
              (SO_LINGER 0 then close: both peers see an RST). With ``persist`` the fault stays
              active and new connections to the target are reset as soon as they are accepted;
              without it the reset is a one-shot action and is not listed afterwards.
``blackhole`` no parameters. Connections are accepted but nothing is forwarded either way; bytes
              are held (bounded; past ``HOLD_LIMIT`` the sender is back-pressured, as a full TCP
              window would) and flow again, in order, once the fault is cleared - like a network
              that drops packets for a while and then retransmits.
``slice``     ``size`` (bytes, >= 1), ``delay_ms`` (>= 0, default 0). Every write is split into
              pieces of ``size`` bytes with ``delay_ms`` between them; the stream stays intact.
``half_open`` ``direction`` ("up" or "down"). A one-way stall: bytes in that direction are held
              (as for ``blackhole``) while the other direction flows normally.

Kinds combine on one target: a chunk first waits out its latency, then is held while a stall
(blackhole or half_open) applies, then is written in pieces of min(slice size, 1/20 s of
bandwidth). Stalls are re-checked between pieces, so switching a fault on or off takes effect
mid-message. A stalled connection whose two peers have both ended their sending side is closed,
since its held bytes could never be read.

This module is pure logic (validation, the text form, merging by target); the
balancer's pipes consult an ``ActiveFaults`` once per chunk, and only when it is not ``None``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from wsconsole.errors import WsconsoleError

ALL = "all"
UP = "up"
DOWN = "down"

# Bytes a stalled or delayed direction holds in memory before it stops reading its source.
HOLD_LIMIT = 4 << 20


class FaultError(WsconsoleError, ValueError):
    """A fault request is malformed: unknown kind, missing or out-of-range parameter."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Base of every fault kind; `kind` names it on the wire."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The wire form: kind plus parameters."""
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True, slots=True)
class Latency(Fault):
    """Delay each chunk by ms + uniform(0, jitter_ms), order kept."""

    kind: ClassVar[str] = "latency"
    ms: float
    jitter_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Bandwidth(Fault):
    """Cap each direction of a connection to bytes_per_s."""

    kind: ClassVar[str] = "bandwidth"
    bytes_per_s: int


@dataclass(frozen=True, slots=True)
class Reset(Fault):
    """RST open connections; with persist, every new one too until cleared."""

    kind: ClassVar[str] = "reset"
    persist: bool = False


@dataclass(frozen=True, slots=True)
class Blackhole(Fault):
    """Accept, forward nothing either way (bytes held until cleared)."""

    kind: ClassVar[str] = "blackhole"


@dataclass(frozen=True, slots=True)
class Slice(Fault):
    """Split writes into `size`-byte pieces with `delay_ms` between them."""

    kind: ClassVar[str] = "slice"
    size: int
    delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class HalfOpen(Fault):
    """Stall one direction ("up": client to backend, "down": backend to client)."""

    kind: ClassVar[str] = "half_open"
    direction: str


KINDS: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (Latency, Bandwidth, Reset, Blackhole, Slice, HalfOpen)
}


def _number(params: Mapping[str, Any], name: str, default: float | None = None) -> float:
    value = params.get(name, default)
    if value is None:
        raise FaultError(f"missing parameter {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"parameter {name!r} must be a number, got {value!r}")
    if value != value or value < 0 or value == float("inf"):
        raise FaultError(f"parameter {name!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_fault(kind: object, params: Mapping[str, Any]) -> Fault:
    """Validate a fault request (kind + params) and build it; raises FaultError."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise FaultError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "latency":
        return Latency(ms=_number(params, "ms"), jitter_ms=_number(params, "jitter_ms", 0.0))
    if kind == "bandwidth":
        rate = _number(params, "bytes_per_s")
        if rate < 1:
            raise FaultError("parameter 'bytes_per_s' must be >= 1")
        return Bandwidth(bytes_per_s=int(rate))
    if kind == "reset":
        persist = params.get("persist", False)
        if not isinstance(persist, bool):
            raise FaultError(f"parameter 'persist' must be true or false, got {persist!r}")
        return Reset(persist=persist)
    if kind == "blackhole":
        return Blackhole()
    if kind == "slice":
        size = _number(params, "size")
        if size < 1 or size != int(size):
            raise FaultError(f"parameter 'size' must be an integer >= 1, got {size!r}")
        return Slice(size=int(size), delay_ms=_number(params, "delay_ms", 0.0))
    direction = params.get("direction")
    if direction not in (UP, DOWN):
        raise FaultError(f"parameter 'direction' must be 'up' or 'down', got {direction!r}")
    return HalfOpen(direction=direction)


_UNITS_MS = {"ms": 1.0, "s": 1000.0}
_UNITS_BYTES = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000_000, "mib": 1 << 20}


def _split_unit(word: str) -> tuple[float, str]:
    digits = word.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/")
    try:
        return float(digits), word[len(digits) :].lower()
    except ValueError:
        raise FaultError(f"not a number: {word!r}") from None


def _duration_ms(word: str) -> float:
    value, unit = _split_unit(word)
    if unit not in ("", *_UNITS_MS):
        raise FaultError(f"unknown time unit in {word!r} (use ms or s)")
    return value * _UNITS_MS.get(unit, 1.0)


def _bytes(word: str, per_second: bool = False) -> float:
    value, unit = _split_unit(word)
    if per_second:
        unit = unit.removesuffix("/s")
    if unit not in ("", *_UNITS_BYTES):
        raise FaultError(f"unknown size unit in {word!r} (use B, kB, KiB, MB, MiB)")
    return value * _UNITS_BYTES.get(unit, 1)


def fault_from_words(words: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a short text form into (kind, params) for `parse_fault`; raises FaultError.

    Forms: ``latency 200ms [50ms]``, ``bandwidth 100kB/s``, ``reset [persist]``, ``blackhole``,
    ``slice 16 [5ms]``, ``half_open up|down`` - as typed on the harness stdin (``net ID ...``).
    """
    if not words:
        raise FaultError("missing fault kind")
    kind, args = words[0].replace("-", "_"), words[1:]
    maximum = {"latency": 2, "bandwidth": 1, "reset": 1, "blackhole": 0, "slice": 2}.get(kind, 1)
    if len(args) > maximum:
        raise FaultError(f"too many arguments for {kind}: {' '.join(args)}")
    params: dict[str, Any] = {}
    if kind == "latency" and args:
        params["ms"] = _duration_ms(args[0])
        if len(args) > 1:
            params["jitter_ms"] = _duration_ms(args[1])
    elif kind == "bandwidth" and args:
        params["bytes_per_s"] = _bytes(args[0], per_second=True)
    elif kind == "reset" and args:
        if args[0] != "persist":
            raise FaultError(f"reset takes only 'persist', got {args[0]!r}")
        params["persist"] = True
    elif kind == "slice" and args:
        params["size"] = _bytes(args[0])
        if len(args) > 1:
            params["delay_ms"] = _duration_ms(args[1])
    elif kind == "half_open" and args:
        params["direction"] = args[0]
    parse_fault(kind, params)  # validate now so the caller gets the message
    return kind, params


@dataclass(frozen=True, slots=True)
class ActiveFaults:
    """What one backend's connections must do right now; None stands for "no fault at all"."""

    latency: Latency | None = None
    bandwidth: Bandwidth | None = None
    slice: Slice | None = None
    blackhole: bool = False
    stall_up: bool = False
    stall_down: bool = False
    reset: bool = False

    def delay(self, rng: random.Random) -> float:
        """Seconds to hold a chunk read now (latency plus jitter)."""
        latency = self.latency
        if latency is None:
            return 0.0
        jitter = rng.uniform(0.0, latency.jitter_ms) if latency.jitter_ms else 0.0
        return (latency.ms + jitter) / 1000.0

    def stalls(self, direction: str) -> bool:
        """Whether bytes in `direction` must be held now."""
        return self.blackhole or (self.stall_up if direction == UP else self.stall_down)

    def shapes(self) -> bool:
        """Whether writes must be cut into pieces (bandwidth or slice)."""
        return self.bandwidth is not None or self.slice is not None


def merge(faults: Mapping[str, Fault]) -> ActiveFaults | None:
    """Fold one target's faults (kind -> fault) into an ActiveFaults; None when nothing applies."""
    if not faults:
        return None
    half = faults.get("half_open")
    reset = faults.get("reset")
    return ActiveFaults(
        latency=faults.get("latency"),  # type: ignore[arg-type]
        bandwidth=faults.get("bandwidth"),  # type: ignore[arg-type]
        slice=faults.get("slice"),  # type: ignore[arg-type]
        blackhole="blackhole" in faults,
        stall_up=isinstance(half, HalfOpen) and half.direction == UP,
        stall_down=isinstance(half, HalfOpen) and half.direction == DOWN,
        reset=isinstance(reset, Reset) and reset.persist,
    )


class FaultBoard:
    """Every active fault by target; answers the effective faults of a backend."""

    def __init__(self) -> None:
        self._by_target: dict[str, dict[str, Fault]] = {}

    def set(self, target: str, fault: Fault) -> None:
        """Activate `fault` on `target` (replacing a fault of the same kind there)."""
        if isinstance(fault, Reset) and not fault.persist:
            return  # a one-shot reset is an action, not a state
        self._by_target.setdefault(target, {})[fault.kind] = fault

    def clear(self, target: str, kind: str | None = None) -> int:
        """Remove `kind` (None: every kind) from `target`; returns how many faults went away."""
        current = self._by_target.get(target)
        if not current:
            return 0
        if kind is None:
            removed = len(current)
            current.clear()
        else:
            removed = 1 if current.pop(kind, None) is not None else 0
        if not current:
            self._by_target.pop(target, None)
        return removed

    def forget(self, target: str) -> None:
        """Drop every fault of a removed backend."""
        self._by_target.pop(target, None)

    def effective(self, backend_id: str) -> ActiveFaults | None:
        """The merged faults of `backend_id`: its own over the "all" ones."""
        combined = {**self._by_target.get(ALL, {}), **self._by_target.get(backend_id, {})}
        return merge(combined)

    def listing(self) -> list[dict[str, Any]]:
        """Every active fault as {"target", "kind", ...params}, for stats and replies."""
        return [
            {"target": target, **fault.to_dict()}
            for target, faults in sorted(self._by_target.items())
            for fault in faults.values()
        ]


def bandwidth_piece(bytes_per_s: int) -> int:
    """Piece size for a bandwidth cap: 1/20 s worth, so pacing is smooth but not per byte."""
    return max(1, bytes_per_s // 20)
