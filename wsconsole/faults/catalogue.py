"""The fault catalogue: RFC 6455 framing and fragment cases, permessage-deflate (RFC 7692),
opening handshakes, and harness-protocol mistakes, in one ordered list with lookups.

What a case is lives in `case.py`; the cases themselves in `framecases.py` (framing,
fragments, harness) and `handshakecases.py` (handshake, compression). The catalogue lists
them group by group, the order of docs/faults.md, which is this module as tables.
"""

from __future__ import annotations

from collections.abc import Iterable

from wsconsole.faults.case import (
    BOTH,
    C2S,
    DEFAULT_MASK_KEY,
    DEFAULT_MAX_SIZE,
    NO_STATUS,
    S2C,
    BuildContext,
    Case,
    Direction,
    Expectation,
    Group,
    Kind,
    Layer,
    Reaction,
    Request,
    UnknownCase,
)
from wsconsole.faults.framecases import (
    FAIL_1002,
    FAIL_1007,
    FAIL_1009,
    PING_PAYLOAD,
    frame_cases,
    harness_cases,
)
from wsconsole.faults.handshakecases import compression_cases, handshake_cases

_ORDER = list(Group)
CATALOGUE: tuple[Case, ...] = tuple(sorted(
    (*frame_cases(), *compression_cases(), *handshake_cases(), *harness_cases()),
    key=lambda case: _ORDER.index(case.group),
))
_BY_ID: dict[str, Case] = {case.id: case for case in CATALOGUE}
if len(_BY_ID) != len(CATALOGUE):  # pragma: no cover - guards edits to the case lists
    raise RuntimeError("duplicate case ids in the catalogue")

__all__ = [
    "BOTH", "C2S", "CATALOGUE", "DEFAULT_MASK_KEY", "DEFAULT_MAX_SIZE", "FAIL_1002",
    "FAIL_1007", "FAIL_1009", "NO_STATUS", "PING_PAYLOAD", "S2C", "BuildContext", "Case",
    "Direction", "Expectation", "Group", "Kind", "Layer", "Reaction", "Request",
    "UnknownCase", "case_ids", "get_case", "select", "server_bytes",
]

def get_case(case_id: str) -> Case:
    """The case with this id; raises UnknownCase (a KeyError) with a readable message."""
    try:
        return _BY_ID[case_id]
    except KeyError:
        raise UnknownCase(case_id) from None


def case_ids() -> list[str]:
    """Every case id, in catalogue order."""
    return [case.id for case in CATALOGUE]


def select(
    ids: Iterable[str] | None = None,
    *,
    direction: Direction | None = None,
    layers: Iterable[Layer] | None = None,
    groups: Iterable[Group] | None = None,
) -> list[Case]:
    """Cases by id (in the order given) or all, filtered by direction, layer and group."""
    chosen = [get_case(i) for i in ids] if ids else list(CATALOGUE)
    if direction is not None:
        chosen = [c for c in chosen if c.applies_to(direction)]
    if layers is not None:
        wanted_layers = set(layers)
        chosen = [c for c in chosen if c.layer in wanted_layers]
    if groups is not None:
        wanted_groups = set(groups)
        chosen = [c for c in chosen if c.group in wanted_groups]
    return chosen


def server_bytes(case_id: str, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """What a server writes to a client for this case (unmasked frames unless the case says)."""
    return get_case(case_id).wire(Direction.SERVER_TO_CLIENT, max_size=max_size)

