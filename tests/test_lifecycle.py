"""Lifecycle: legal and illegal transitions, timestamps, bounded history, JSON form."""

from __future__ import annotations

import itertools

import pytest

from wsconsole.core.lifecycle import ALLOWED, IllegalTransition, Lifecycle, State


def test_reconnect_cycle_is_recorded_with_cause_attempt_and_delay() -> None:
    """A typical life: each move keeps its cause, attempt and delay, with rising timestamps."""
    life = Lifecycle("c1")
    life.move(State.CONNECTING)
    life.move(State.OPEN)
    lost = life.move(State.RECONNECTING, attempt=1, delay=1.37, code=1001, reason="going away")
    life.move(State.CONNECTING, attempt=1)
    life.move(State.RECONNECTING, attempt=2, delay=2.5, error="refused: connection refused")
    life.move(State.CONNECTING, attempt=2)
    life.move(State.OPEN)
    life.move(State.CLOSING, code=1000)
    life.move(State.CLOSED, code=1000)
    assert [t.state for t in life.history] == [
        State.CONNECTING, State.OPEN, State.RECONNECTING, State.CONNECTING, State.RECONNECTING,
        State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED,
    ]
    assert (lost.previous, lost.attempt, lost.delay, lost.code, lost.reason) == (
        State.OPEN, 1, 1.37, 1001, "going away")
    stamps = [t.at for t in life.history]
    assert stamps == sorted(stamps)
    assert lost.as_dict() == {
        "conn": "c1", "state": "RECONNECTING", "previous": "OPEN", "at": lost.at,
        "wall": lost.wall, "attempt": 1, "delay": 1.37, "code": 1001, "reason": "going away",
    }


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_only_allowed_moves_pass(src: State, dst: State) -> None:
    """Every pair of states: allowed moves succeed, others raise and change nothing."""
    life = Lifecycle("c")
    life.state = src
    if dst in ALLOWED[src]:
        assert life.move(dst).state is dst
    else:
        with pytest.raises(IllegalTransition):
            life.move(dst)
        assert life.state is src and not life.history


def test_history_is_bounded() -> None:
    """Only the last max_history transitions are kept."""
    life = Lifecycle("c", max_history=3)
    for _ in range(5):
        life.move(State.CONNECTING)
        life.move(State.CLOSED)
    assert len(life.history) == 3 and life.history[-1].state is State.CLOSED
