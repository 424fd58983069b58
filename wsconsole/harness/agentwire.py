"""The agents' wire: signed messages as Redis Streams entries on the shared broker.

Agents on other hosts and the console that commands them share nothing but the broker and a
secret. Every message either way is one stream entry with two fields: `m`, the message as
JSON (`{"v": 1, "from", "to", "kind", "ts", "nonce", "body"}`), and `s`, its HMAC-SHA256
under the secret (hex). Whoever can write to the broker but lacks the secret cannot command
an agent: a message is refused, and the refusal logged, when

- the signature does not match (`bad_signature`), or the entry is malformed (`malformed`);
- it is addressed to someone else (`not_for_me`);
- its timestamp is more than `window` seconds from the receiver's clock (`stale`: a
  recorded message replayed later, or a sender whose clock is off; keep hosts on NTP);
- its nonce was already seen within the window (`replayed`: the same entry added again).

The stream entry's id is not signed (the broker assigns it); the payload is signed, not
encrypted: anyone who can read the broker reads the commands (use TLS and ACLs on it).

Streams (all keys share the hash tag `{wsconsole-agents}`, so on a Redis Cluster they live
in one slot and XREAD works on the cluster client as on a single server):
`commands_stream(agent)` carries the console's commands to one agent, `REPORTS_STREAM` every
agent's reports (hello, state, results, refusals, swarm parts) to the console. Both are
capped (`MAXLEN ~`), so a broker never fills up with them.

Pure logic (`Signer` seals and opens, `NonceBook` remembers), no I/O: agent.py and agents.py
do the reading and writing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from wsconsole.errors import WsconsoleError

VERSION = 1
DEFAULT_WINDOW = 30.0  # seconds a message stays valid either side of the receiver's clock
KEY_TAG = "{wsconsole-agents}"
REPORTS_STREAM = f"wsconsole:{KEY_TAG}:reports"
COMMANDS_MAXLEN = 1_000
REPORTS_MAXLEN = 20_000
CONSOLE = "console"  # the sender name of the console's commands
# A swarm worker started by an agent finds the shared secret here (only workers get it: the
# nodes an agent starts have no business with the agents' wire).
WORKER_SECRET_ENV = "WSCONSOLE_AGENTS_SECRET"
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,40}")


def commands_stream(agent: str) -> str:
    """The stream of commands to one agent."""
    return f"wsconsole:{KEY_TAG}:commands:{agent}"


def check_name(name: str) -> str:
    """An agent's name as given (1-40 letters, digits, '.', '_' or '-'); ValueError if not."""
    if not NAME_RE.fullmatch(name) or name == CONSOLE:
        raise ValueError(f"agent name {name!r}: use 1-40 letters, digits, '.', '_' or '-' "
                         f"(not {CONSOLE!r})")
    return name


class Refused(WsconsoleError, ValueError):
    """A message that must not be acted on; `reason` is one word (see the module docstring)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Message:
    """An opened, verified message."""

    sender: str
    to: str
    kind: str
    ts: float
    nonce: str
    body: dict[str, Any]


@dataclass
class NonceBook:
    """The nonces seen within the window, oldest first; bounded by time, not by count.

    A nonce is kept for twice the window: a message is valid for `2 * window` seconds around
    its timestamp, so a copy can come back at most that long after the first was seen.
    `snapshot`/`restore` carry the book over a restart (the agent's state file), so a copy
    added while the agent was down is still refused as `replayed`.
    """

    window: float
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def fresh(self, nonce: str, now: float) -> bool:
        """Record `nonce`; False if it was already seen within the window."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= 2 * self.window:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)

    def snapshot(self) -> dict[str, float]:
        """The nonces and when they were seen (JSON-ready), oldest first."""
        return dict(self._seen)

    def restore(self, seen: Mapping[str, float]) -> None:
        """Take back a snapshot (entries already known stay as they are)."""
        for nonce, at in sorted(seen.items(), key=lambda item: item[1]):
            self._seen.setdefault(str(nonce), float(at))


class Signer:
    """Seals messages from `name` and opens the ones addressed to it: an agent its commands,
    the console (`CONSOLE`) every agent's reports."""

    def __init__(
        self,
        name: str,
        secret: str | bytes,
        *,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the agents' shared secret must not be empty")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"the replay window must be > 0 seconds, not {window}")
        self.name = name
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)
        self.window = window
        self.clock = clock
        self.nonces = NonceBook(window)

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def seal(self, to: str, kind: str, body: Mapping[str, Any] | None = None) -> dict[str, bytes]:
        """The stream entry's fields for one message."""
        message = {
            "v": VERSION, "from": self.name, "to": to, "kind": kind, "ts": self.clock(),
            "nonce": secrets.token_hex(12), "body": dict(body or {}),
        }  # fmt: skip
        data = orjson.dumps(message)
        return {"m": data, "s": self._mac(data).encode()}

    def open(self, fields: Mapping[bytes | str, bytes | str]) -> Message:
        """Verify and parse one entry's fields; Refused saying why it must be ignored."""
        data = _field(fields, "m")
        signature = _field(fields, "s")
        if data is None or signature is None:
            raise Refused("malformed", "the entry lacks its message or its signature")
        if not hmac.compare_digest(self._mac(data).encode(), signature):
            raise Refused("bad_signature", "the signature does not match the shared secret")
        try:
            message = orjson.loads(data)
            if not isinstance(message, dict):
                raise TypeError("not an object")
            sender, target = str(message["from"]), str(message["to"])
            kind, nonce = str(message["kind"]), str(message["nonce"])
            ts, body = float(message["ts"]), message["body"]
            if message.get("v") != VERSION or not isinstance(body, dict):
                raise ValueError("unknown version or body")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise Refused("malformed", f"a signed entry that is no message ({exc})") from None
        if target != self.name:
            raise Refused("not_for_me", f"addressed to {target!r}")
        now = self.clock()
        if not math.isfinite(ts) or abs(now - ts) > self.window:
            raise Refused("stale", f"sent {now - ts:+.1f} s from now; the window is "
                                   f"{self.window:.0f} s")
        if not self.nonces.fresh(nonce, now):
            raise Refused("replayed", f"nonce {nonce} was already used")
        return Message(sender, target, kind, ts, nonce, body)


def _field(fields: Mapping[bytes | str, bytes | str], name: str) -> bytes | None:
    value = fields.get(name.encode(), fields.get(name))  # type: ignore[call-overload]
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)
