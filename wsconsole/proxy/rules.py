"""Intercept rules: which frames the proxy holds, drops, delays, rewrites or duplicates.

Pure logic, no I/O (tested without a loop): a `Rule` is a match (direction, opcode, a
substring, a regular expression, a JSON path with an optional value, the connection's URL)
and an action; a `RuleSet` answers, for one `Message`, the first enabled rule that matches
and what to do. Rules are tried in order and the first match wins, as in Burp's and
Proxyman's rule lists, so a user reads the list top down to know what will happen.

Actions:

``hold``      the frame waits for the user (forward as is, forward edited, or drop); the
              frames behind it in the same direction wait too, in order. `timeout` seconds
              (optional) then `on_timeout` ("forward" or "drop") decide for an absent user.
``drop``      the frame is not delivered (a dropped close frame: the peer's TCP connection
              is cut instead, so it sees an abnormal closure).
``delay``     delivered `delay_ms` later; frames behind it keep their order.
``rewrite``   the payload is replaced: `template` (placeholders `{payload}`, `{0}`..`{9}` for
              the groups of `regex`, `{json:PATH}` for a JSON value), `replace` (every match of
              `regex` replaced, `\\1` for groups) or `set` (JSON paths given new values).
``duplicate`` delivered 1 + `copies` times.

JSON paths: `$.a.b`, `$.items[0].id`, `$['odd key']`, `$.items[*].id` (any element).
A JSON-path match needs a text frame holding JSON; with `equals` the value at the path must
equal it, else the path must exist.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from wsconsole.core.events import Direction, Opcode
from wsconsole.errors import WsconsoleError


class Action(StrEnum):
    """What a matching rule does to a frame."""

    HOLD = "hold"
    DROP = "drop"
    DELAY = "delay"
    REWRITE = "rewrite"
    DUPLICATE = "duplicate"


OPCODES: dict[str, frozenset[Opcode]] = {
    "text": frozenset({Opcode.TEXT}),
    "binary": frozenset({Opcode.BINARY}),
    "data": frozenset({Opcode.TEXT, Opcode.BINARY}),
    "ping": frozenset({Opcode.PING}),
    "pong": frozenset({Opcode.PONG}),
    "close": frozenset({Opcode.CLOSE}),
    "control": frozenset({Opcode.PING, Opcode.PONG, Opcode.CLOSE}),
    "any": frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG, Opcode.CLOSE}),
}
DIRECTIONS: dict[str, Direction | None] = {"out": Direction.OUT, "in": Direction.IN, "both": None}
ON_TIMEOUT = frozenset({"forward", "drop"})
MAX_COPIES = 1000

UNSET: Any = object()  # "no value given" (None is a value a JSON path may hold)


class RuleError(WsconsoleError, ValueError):
    """A rule that cannot work; `key` names the setting at fault (for the file's line)."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


# -- JSON paths -------------------------------------------------------------------------------

_STEP = re.compile(r"\.([A-Za-z_$][\w$-]*)|\.\*|\[(\d+)\]|\[\*\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_ANY = ("any",)


def parse_json_path(path: str) -> tuple[tuple[Any, ...], ...]:
    """The steps of a JSON path (`$.a[0]['b c'][*]`); RuleError when it is not one."""
    if not path.startswith("$"):
        raise RuleError(f"a JSON path starts with $, not {path!r}", "json_path")
    steps: list[tuple[Any, ...]] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise RuleError(f"JSON path {path!r} is not understood at {path[position:]!r}",
                            "json_path")
        name, index, single, double = match.groups()
        if index is not None:
            steps.append(("index", int(index)))
        elif name is not None or single is not None or double is not None:
            steps.append(("key", next(p for p in (name, single, double) if p is not None)))
        else:
            steps.append(_ANY)
        position = match.end()
    return tuple(steps)


def json_values(value: Any, steps: tuple[tuple[Any, ...], ...]) -> Iterator[Any]:
    """Every value the path reaches in `value` (none when it leads nowhere)."""
    if not steps:
        yield value
        return
    step, rest = steps[0], steps[1:]
    if step[0] == "key":
        if isinstance(value, dict) and step[1] in value:
            yield from json_values(value[step[1]], rest)
    elif step[0] == "index":
        if isinstance(value, list) and step[1] < len(value):
            yield from json_values(value[step[1]], rest)
    elif isinstance(value, dict):
        for item in value.values():
            yield from json_values(item, rest)
    elif isinstance(value, list):
        for item in value:
            yield from json_values(item, rest)


def json_set(value: Any, steps: tuple[tuple[Any, ...], ...], new: Any) -> Any:
    """`value` with the path's targets set to `new` (a missing last key is added)."""
    if not steps:
        return new
    step, rest = steps[0], steps[1:]
    if step[0] == "key" and isinstance(value, dict):
        if step[1] in value or not rest:
            value[step[1]] = json_set(value.get(step[1]), rest, new)
    elif step[0] == "index" and isinstance(value, list) and step[1] < len(value):
        value[step[1]] = json_set(value[step[1]], rest, new)
    elif step[0] == "any" and isinstance(value, dict):
        for key in value:
            value[key] = json_set(value[key], rest, new)
    elif step[0] == "any" and isinstance(value, list):
        value[:] = [json_set(item, rest, new) for item in value]
    return value


# -- messages and rules -----------------------------------------------------------------------


class Message:
    """One complete frame or message as the rules see it; text and JSON decoded once."""

    __slots__ = ("_json", "_text", "direction", "opcode", "payload", "url")

    def __init__(self, direction: Direction, opcode: Opcode, payload: bytes, url: str = "") -> None:
        self.direction = direction
        self.opcode = opcode
        self.payload = payload
        self.url = url
        self._text: str | None = UNSET
        self._json: Any = UNSET

    @property
    def text(self) -> str | None:
        """The payload as text (text frames only; None otherwise or when not UTF-8)."""
        if self._text is UNSET:
            self._text = None
            if self.opcode is Opcode.TEXT:
                try:
                    self._text = self.payload.decode()
                except UnicodeDecodeError:
                    pass
        return self._text

    @property
    def json(self) -> Any:
        """The payload parsed as JSON, or UNSET when it is not JSON."""
        if self._json is UNSET and self.text is not None:
            try:
                self._json = orjson.loads(self.payload)
            except orjson.JSONDecodeError:
                self._json = _NOT_JSON
        return UNSET if self._json is _NOT_JSON else self._json


_NOT_JSON = object()
_PLACEHOLDER = re.compile(r"\{(payload|\d|json:[^}]+)\}")


@dataclass(frozen=True)
class Rule:
    """One intercept rule: a match and an action (see the module docstring)."""

    name: str
    action: Action
    direction: str = "both"
    opcode: str = "data"
    contains: str | None = None
    regex: str | None = None
    json_path: str | None = None
    equals: Any = UNSET
    url: str | None = None
    delay_ms: float = 0.0
    copies: int = 1
    template: str | None = None
    replace: str | None = None
    set: Mapping[str, Any] | None = None
    timeout: float | None = None
    on_timeout: str = "forward"
    enabled: bool = True
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _path: tuple[tuple[Any, ...], ...] | None = field(default=None, init=False, repr=False,
                                                       compare=False)
    _sets: tuple[tuple[tuple[tuple[Any, ...], ...], Any], ...] = field(
        default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.action, Action):
            try:
                object.__setattr__(self, "action", Action(self.action))
            except ValueError:
                raise RuleError(f"action must be one of {', '.join(Action)}, not "
                                f"{self.action!r}", "action") from None
        self._check_match()
        self._check_action()

    def _check_match(self) -> None:
        if self.direction not in DIRECTIONS:
            raise RuleError(f"direction must be one of {', '.join(DIRECTIONS)}, not "
                            f"{self.direction!r}", "direction")
        if self.opcode not in OPCODES:
            raise RuleError(f"opcode must be one of {', '.join(OPCODES)}, not {self.opcode!r}",
                            "opcode")
        if self.regex is not None:
            try:
                object.__setattr__(self, "_pattern", re.compile(self.regex))
            except re.error as exc:
                raise RuleError(f"regex {self.regex!r} is not valid: {exc}", "regex") from None
        if self.json_path is not None:
            object.__setattr__(self, "_path", parse_json_path(self.json_path))
        elif self.equals is not UNSET:
            raise RuleError("equals needs a json_path to compare at", "equals")

    def _check_action(self) -> None:
        action = self.action
        if Opcode.CLOSE in self.opcodes and action in (Action.REWRITE, Action.DUPLICATE):
            raise RuleError(f"a close frame cannot be given the {action} action "
                            "(close a side with a chosen code instead)", "action")
        if action is Action.DELAY and not self.delay_ms > 0:
            raise RuleError("delay needs delay_ms greater than 0", "delay_ms")
        if action is Action.DUPLICATE and not 1 <= self.copies <= MAX_COPIES:
            raise RuleError(f"copies must be between 1 and {MAX_COPIES}", "copies")
        if action is Action.HOLD:
            if self.timeout is not None and not self.timeout > 0:
                raise RuleError("timeout must be greater than 0 seconds", "timeout")
            if self.on_timeout not in ON_TIMEOUT:
                raise RuleError(f"on_timeout must be forward or drop, not {self.on_timeout!r}",
                                "on_timeout")
        if action is Action.REWRITE:
            self._check_rewrite()
        else:
            for key in ("template", "replace", "set"):
                if getattr(self, key) is not None:
                    raise RuleError(f"{key} is only for the rewrite action", key)

    def _check_rewrite(self) -> None:
        given = [key for key in ("template", "replace", "set") if getattr(self, key) is not None]
        if len(given) != 1:
            raise RuleError("rewrite needs exactly one of template, replace or set",
                            given[1] if len(given) > 1 else "action")
        if self.replace is not None and self._pattern is None:
            raise RuleError("replace needs a regex whose matches it replaces", "replace")
        if self.set is not None:
            if not self.set:
                raise RuleError("set needs at least one JSON path = value", "set")
            sets = []
            for path, value in self.set.items():
                try:
                    sets.append((parse_json_path(path), value))
                except RuleError as exc:
                    raise RuleError(exc.reason, "set") from None
            object.__setattr__(self, "_sets", tuple(sets))
        if self._pattern is None and self.template is not None:
            for match in _PLACEHOLDER.finditer(self.template):
                if match[1].isdigit():
                    raise RuleError(f"template uses {{{match[1]}}} but the rule has no regex",
                                    "template")

    @property
    def opcodes(self) -> frozenset[Opcode]:
        """The opcodes this rule applies to."""
        return OPCODES[self.opcode]

    def match(self, message: Message) -> re.Match[str] | bool:
        """Whether `message` matches (the regex match object when there is a regex)."""
        if not self.enabled or message.opcode not in OPCODES[self.opcode]:
            return False
        wanted = DIRECTIONS[self.direction]
        if wanted is not None and message.direction is not wanted:
            return False
        if self.url is not None and not fnmatch.fnmatchcase(message.url, self.url):
            return False
        if self.contains is not None and self.contains.encode() not in message.payload:
            return False
        if self._path is not None and not self._json_matches(message):
            return False
        if self.set is not None and not isinstance(message.json, dict | list):
            return False
        if self._pattern is not None:
            text = message.text
            found = self._pattern.search(text) if text is not None else None
            return found if found is not None else False
        return True

    def _json_matches(self, message: Message) -> bool:
        document = message.json
        if document is UNSET:
            return False
        assert self._path is not None
        values = json_values(document, self._path)
        if self.equals is UNSET:
            return next(values, UNSET) is not UNSET
        return any(_same(value, self.equals) for value in values)

    def rewrite(self, message: Message, found: re.Match[str] | bool) -> bytes:
        """The new payload a rewrite rule gives `message` (which it matched)."""
        if self.set is not None:
            document = orjson.loads(message.payload)
            for steps, value in self._sets:
                document = json_set(document, steps, value)
            return orjson.dumps(document)
        if self.replace is not None:
            assert self._pattern is not None and message.text is not None
            return self._pattern.sub(self.replace, message.text).encode()
        assert self.template is not None
        return _render(self.template, message, found).encode()


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value == wanted
    return bool(value == wanted)


def _render(template: str, message: Message, found: re.Match[str] | bool) -> str:
    def fill(placeholder: re.Match[str]) -> str:
        key = placeholder[1]
        if key == "payload":
            return message.text if message.text is not None else message.payload.decode(
                "utf-8", "replace")
        if key.isdigit():
            if isinstance(found, re.Match) and int(key) <= (found.re.groups or 0):
                return found[int(key)] or ""
            return ""
        document = message.json
        if document is UNSET:
            return "null"
        try:
            steps = parse_json_path(key[5:])
        except RuleError:
            return placeholder[0]
        value = next(json_values(document, steps), None)
        return orjson.dumps(value).decode()

    return _PLACEHOLDER.sub(fill, template)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message: the rule that matched and, for rewrite, the new payload."""

    rule: Rule
    payload: bytes

    @property
    def action(self) -> Action:
        """The matching rule's action."""
        return self.rule.action


class RuleSet:
    """An ordered list of rules; the first enabled match decides."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: list[Rule] = list(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def replace(self, rules: Iterable[Rule]) -> None:
        """Use `rules` from now on (frames already decided keep their decision)."""
        self.rules = list(rules)

    def decide(self, message: Message) -> Decision | None:
        """The decision for `message`, or None to forward it untouched."""
        for rule in self.rules:
            found = rule.match(message)
            if found is False:
                continue
            if rule.action is Action.REWRITE:
                return Decision(rule, rule.rewrite(message, found))
            return Decision(rule, message.payload)
        return None
