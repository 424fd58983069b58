"""The merge of a swarm split over workers is exact: two workers' journals replayed into one
Accounting, in any interleaving of their batches, give the same figures as one Accounting fed
every event in the order they happened (one process)."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from wsconsole.swarm.accounting import Accounting
from wsconsole.swarm.journal import JournalingAccounting, WallClock, replay

Event = tuple[int, str, tuple[Any, ...]]  # (client index that sees it, method, arguments)


def _story(rng: random.Random, clients: int, rooms: int) -> list[Event]:
    """A run as it happened, in time order: connects, joins, publishes, acks and deliveries
    (some lost, duplicated, late, or announced lost by a window error), reconnects, errors."""
    name = [f"c{i + 1:04d}" for i in range(clients)]
    room = [f"swarm-{i % rooms}" for i in range(clients)]
    events: list[Event] = []
    t = 10.0
    for i in range(clients):
        events += [(i, "transition", (name[i], "CONNECTING", t)),
                   (i, "transition", (name[i], "OPEN", t + 0.25)),
                   (i, "joined", (name[i], room[i], 0, "E1", False))]
        t += 0.25
    seqs = dict.fromkeys(room, 0)
    late: list[Event] = []
    for n in range(rng.randint(5, 40)):
        p = rng.randrange(clients)
        ident = f"{name[p]}-{n + 1}"
        events.append((p, "published", (name[p], room[p], ident)))
        if rng.random() < 0.1:
            continue  # never acknowledged
        seqs[room[p]] += 1
        seq = seqs[room[p]]
        t += 0.25
        events.append((p, "acked", (ident, seq, t, "E1")))
        for s in (s for s in range(clients) if room[s] == room[p]):
            roll = rng.random()
            delivery = (s, "delivered_message", (name[s], room[p], seq, ident, rng.random(), "E1"))
            if roll < 0.1:
                continue  # lost
            if roll < 0.2:
                late.append(delivery)  # out of order: comes after later ones
                continue
            events.append(delivery)
            if roll < 0.3:
                events.append(delivery)  # duplicated
        if late and rng.random() < 0.3:
            events.append(late.pop())
        if rng.random() < 0.1:
            s = rng.randrange(clients)
            events += [(s, "transition", (name[s], "RECONNECTING", t)),
                       (s, "transition", (name[s], "OPEN", t + rng.choice((0.25, 0.5, 1.0)))),
                       (s, "error", ("connection_lost",))]
        if rng.random() < 0.05:
            s = rng.randrange(clients)
            events += [(s, "window_exceeded", (name[s], room[s], seqs[room[s]], "E1")),
                       (s, "joined", (name[s], room[s], seqs[room[s]], "E1", False))]
    events += late
    return events


def _one_process(events: list[Event], clients: int) -> Accounting:
    acc = Accounting(started_at=0.0)
    for i in range(clients):
        acc.client_added(f"c{i + 1:04d}")
    for _, method, args in events:
        getattr(acc, method)(*args)
    acc.begin_stop()
    for i in range(clients):
        acc.transition(f"c{i + 1:04d}", "CLOSED", 99.0)  # the stop: no reconnect clock
    return acc


def _worker(events: list[Event], part: range, clock: WallClock) -> JournalingAccounting:
    acc = JournalingAccounting(started_at=0.0, clock=clock)
    acc.add_peers(f"c{i + 1:04d}" for i in range(part.start))
    acc.add_peers(f"c{i + 1:04d}" for i in range(part.stop, part.stop + 6))
    for i in part:
        acc.client_added(f"c{i + 1:04d}")
    for owner, method, args in events:
        if owner in part:
            getattr(acc, method)(*args)
    acc.begin_stop()
    for i in part:
        acc.transition(f"c{i + 1:04d}", "CLOSED", 99.0)
    return acc


def _batches(records: list[Any], rng: random.Random) -> list[list[Any]]:
    batches = []
    while records:
        size = rng.randint(1, 12)
        batches.append(orjson.loads(orjson.dumps(records[:size])))  # as it travels
        records = records[size:]
    return batches


FIGURES = ("sent", "acknowledged", "unacknowledged", "expected", "delivered", "lost",
           "announced_lost", "duplicated", "out_of_order", "foreign", "clients",
           "subscriptions", "reconnects", "disconnected_at_end", "errors", "p50_latency_ms",
           "p99_latency_ms", "max_latency_ms", "reconnect_p50_ms", "reconnect_max_ms")


@settings(max_examples=60, deadline=None)
@given(rng=st.randoms(use_true_random=False), clients=st.integers(2, 6),
       rooms=st.integers(1, 2))
def test_two_journals_replayed_in_any_interleaving_equal_one_process(
        rng: random.Random, clients: int, rooms: int) -> None:
    rooms = min(rooms, clients)
    events = _story(rng, clients, rooms)
    split = rng.randint(1, clients - 1)
    clock = WallClock()
    parts = [_worker(events, range(0, split), clock), _worker(events, range(split, clients), clock)]
    queues = [_batches(part.take(), rng) for part in parts]

    merged = Accounting(started_at=0.0)
    for i in range(clients):  # the coordinator knows every client of the swarm
        merged.client_added(f"c{i + 1:04d}")
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        replay(merged, queue.pop(0), clock)

    expected = _one_process(events, clients).summary(100.0)
    got = merged.summary(100.0)
    assert {k: got[k] for k in FIGURES} == {k: expected[k] for k in FIGURES}
    summaries = [part.summary(100.0) for part in parts]
    for key in ("sent", "acknowledged", "delivered", "duplicated", "reconnects"):
        assert got[key] == sum(s[key] for s in summaries), key


def test_a_delivery_replayed_before_its_publish_is_ours_not_foreign() -> None:
    acc = Accounting()
    for name in ("c0001", "c0002"):
        acc.client_added(name)
    acc.joined("c0002", "r", 0, "E")
    acc.delivered_message("c0002", "r", 1, "c0001-1", 0.01, "E")  # worker B's batch first
    acc.delivered_message("c0002", "r", 2, "x-1", 0.01, "E")  # another publisher's message
    acc.published("c0001", "r", "c0001-1")  # then worker A's
    acc.acked("c0001-1", 1, 1.0, "E")
    summary = acc.summary(2.0)
    assert (summary["sent"], summary["delivered"], summary["foreign"]) == (1, 1, 1)
    assert summary["lost"] == 0 and summary["expected"] == 1
