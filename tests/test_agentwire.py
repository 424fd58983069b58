"""The agents' wire (harness/agentwire.py): sealing, opening and every refusal, no I/O."""

from __future__ import annotations

import orjson
import pytest

from wsconsole.harness.agentwire import (
    CONSOLE,
    REPORTS_STREAM,
    NonceBook,
    Refused,
    Signer,
    check_name,
    commands_stream,
)

SECRET = "s3cret"


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pair(clock: Clock | None = None, window: float = 30.0) -> tuple[Signer, Signer]:
    """The console's signer and agent a1's, on one clock."""
    clock = clock or Clock()
    return (Signer(CONSOLE, SECRET, window=window, clock=clock),
            Signer("a1", SECRET, window=window, clock=clock))


def refusal(signer: Signer, fields: dict) -> str:
    with pytest.raises(Refused) as caught:
        signer.open(fields)
    return caught.value.reason


def test_a_sealed_message_opens_with_its_fields() -> None:
    console, agent = pair()
    fields = console.seal("a1", "start", {"id": "c1", "proc": "n1"})
    message = agent.open(fields)
    assert (message.sender, message.to, message.kind) == (CONSOLE, "a1", "start")
    assert message.body == {"id": "c1", "proc": "n1"}
    # what redis-py hands back: bytes keys and values
    again = console.seal("a1", "status")
    assert agent.open({k.encode(): v for k, v in again.items()}).kind == "status"


def test_a_changed_message_or_another_secret_is_a_bad_signature() -> None:
    console, agent = pair()
    fields = console.seal("a1", "kill", {"id": "c1", "proc": "n1"})
    tampered = dict(fields, m=fields["m"].replace(b"n1", b"n2"))
    assert refusal(agent, tampered) == "bad_signature"
    intruder = Signer(CONSOLE, "guess", clock=console.clock)
    assert refusal(agent, intruder.seal("a1", "kill", {"id": "c2"})) == "bad_signature"
    assert refusal(agent, dict(fields, s=b"")) == "bad_signature"


def test_entries_that_are_no_messages_are_malformed() -> None:
    _, agent = pair()
    assert refusal(agent, {"m": b"{}"}) == "malformed"
    assert refusal(agent, {}) == "malformed"
    for data in (b"[1, 2]", b"not json", b'{"v": 1}',
                 orjson.dumps({"v": 2, "from": "x", "to": "a1", "kind": "k", "ts": 1,
                               "nonce": "n", "body": {}})):
        signed = {"m": data, "s": agent._mac(data).encode()}  # signed with the right secret
        assert refusal(agent, signed) == "malformed", data


def test_a_message_for_another_agent_is_not_for_me() -> None:
    console, agent = pair()
    assert refusal(agent, console.seal("a2", "start")) == "not_for_me"
    # nor does an agent take a report addressed to the console
    assert refusal(agent, agent.seal(CONSOLE, "state")) == "not_for_me"


def test_outside_the_window_either_way_is_stale() -> None:
    clock = Clock()
    console, agent = pair(clock, window=30)
    old = console.seal("a1", "start")
    clock.now += 30.5
    assert refusal(agent, old) == "stale"
    early = console.seal("a1", "start")
    clock.now -= 31
    assert refusal(agent, early) == "stale"
    clock.now += 2  # 29 s early: within the window
    assert agent.open(early).kind == "start"


def test_the_same_entry_twice_is_replayed() -> None:
    console, agent = pair()
    fields = console.seal("a1", "restart", {"id": "c1"})
    agent.open(fields)
    assert refusal(agent, fields) == "replayed"


def test_the_nonce_book_forgets_after_twice_the_window_and_survives_a_restart() -> None:
    book = NonceBook(window=10)
    assert book.fresh("a", 0.0) and not book.fresh("a", 19.0)
    assert book.fresh("b", 25.0)  # prunes "a" (seen 25 s ago > 20 s)
    assert len(book) == 1 and book.fresh("a", 25.0)
    clock = Clock()
    console, agent = pair(clock)
    fields = console.seal("a1", "stop", {"id": "c9"})
    agent.open(fields)
    restarted = Signer("a1", SECRET, clock=clock)
    restarted.nonces.restore(orjson.loads(orjson.dumps(agent.nonces.snapshot())))
    assert refusal(restarted, fields) == "replayed"


def test_names_streams_and_parameters_are_checked() -> None:
    assert check_name("host-1.lab_2") == "host-1.lab_2"
    for bad in ("", "a b", "x" * 41, CONSOLE, "a/b"):
        with pytest.raises(ValueError):
            check_name(bad)
    # every stream in one hash slot of a cluster
    assert "{wsconsole-agents}" in commands_stream("a1") and "{wsconsole-agents}" in REPORTS_STREAM
    with pytest.raises(ValueError, match="secret"):
        Signer("a1", "")
    with pytest.raises(ValueError, match="window"):
        Signer("a1", SECRET, window=0)
