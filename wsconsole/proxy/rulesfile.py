"""The proxy's rules file (TOML) for headless use: intercept rules and network faults.

    [[rule]]
    name = "hold orders"            # optional; "rule N" otherwise
    direction = "out"               # out (client -> server), in (server -> client), both
    opcode = "text"                 # text, binary, data (default), ping, pong, close, control, any
    json_path = "$.type"            # match: contains, regex, json_path (+ equals), url (a glob)
    equals = "order"
    action = "hold"                 # hold, drop, delay, rewrite, duplicate
    timeout = 30                    # hold: decide after 30 s ...
    on_timeout = "forward"          # ... forward (default) or drop

    [[fault]]                       # on every proxied connection, as the balancer's faults
    kind = "latency"
    ms = 100

The loader is strict: an unknown key, a value of the wrong type or out of range, a regex
that does not compile or a rule that cannot work is refused with `FILE:LINE: reason`
(exit code 2 on the command line), never half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from wsconsole.harness.netfaults import KINDS, Fault, FaultError, parse_fault
from wsconsole.proxy.rules import (
    DIRECTIONS,
    MAX_COPIES,
    ON_TIMEOUT,
    OPCODES,
    UNSET,
    Action,
    Rule,
    RuleError,
)
from wsconsole.tomlcheck import TomlFileError, TomlReader, parse_toml, read_text

RULE_KEYS = frozenset({
    "name", "action", "direction", "opcode", "contains", "regex", "json_path", "equals", "url",
    "delay_ms", "copies", "template", "replace", "set", "timeout", "on_timeout", "enabled",
})


class RulesFileError(TomlFileError):
    """An invalid rules file: names the file, the line and the reason."""

    default_name = "rules file"


@dataclass
class RulesFile:
    """What a rules file holds: the rules in order and the faults for every connection."""

    rules: list[Rule] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    path: str | None = None


def load_rules(path: str | Path) -> RulesFile:
    """Read and validate a rules file; RulesFileError (with the line) when it is invalid."""
    return parse_rules(read_text(path, RulesFileError), str(path))


def parse_rules(text: str, path: str | None = None) -> RulesFile:
    """Validate rules-file TOML text; RulesFileError (with the line) when it is invalid."""
    data = parse_toml(text, path, RulesFileError)
    reader = TomlReader(text, path, RulesFileError)
    reader.check_keys(data, frozenset({"rule", "fault"}))
    result = RulesFile(path=path)
    for index, table in enumerate(_tables(reader, data, "rule")):
        result.rules.append(_rule(reader, table, index))
    for index, table in enumerate(_tables(reader, data, "fault")):
        result.faults.append(_fault(reader, table, index))
    return result


def _tables(reader: TomlReader, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise reader.fail(f"{key} must be an array of tables ([[{key}]])", key)
    return items


def _rule(reader: TomlReader, table: dict[str, Any], index: int) -> Rule:
    where = ("rule", index)
    reader.check_keys(table, RULE_KEYS, *where)
    if "action" not in table:
        raise reader.fail(f"rule {index + 1} has no action (one of {', '.join(Action)})", *where)
    values: dict[str, Any] = {
        "name": reader.string(table, "name", f"rule {index + 1}", *where),
        "action": reader.string(table, "action", None, *where,
                                choices=frozenset(a.value for a in Action)),
        "direction": reader.string(table, "direction", "both", *where,
                                   choices=frozenset(DIRECTIONS)),
        "opcode": reader.string(table, "opcode", "data", *where, choices=frozenset(OPCODES)),
        "on_timeout": reader.string(table, "on_timeout", "forward", *where, choices=ON_TIMEOUT),
        "delay_ms": reader.number(table, "delay_ms", 0.0, *where, positive=True),
        "copies": reader.number(table, "copies", 1, *where, minimum=1, maximum=MAX_COPIES,
                                integer=True),
        "timeout": reader.number(table, "timeout", None, *where, positive=True),
        "enabled": reader.boolean(table, "enabled", True, *where),
        "equals": table.get("equals", UNSET),
    }
    for key in ("contains", "regex", "json_path", "url", "template", "replace"):
        values[key] = reader.string(table, key, None, *where)
    if "set" in table:
        values["set"] = reader.table(table, "set", *where)
    try:
        return Rule(**values)
    except RuleError as exc:
        raise reader.fail(f"rule {values['name']!r}: {exc.reason}", *where,
                          exc.key or "action") from None


def _fault(reader: TomlReader, table: dict[str, Any], index: int) -> Fault:
    where = ("fault", index)
    kind = reader.string(table, "kind", None, *where, choices=frozenset(KINDS))
    if kind is None:
        raise reader.fail(f"fault {index + 1} has no kind (one of {', '.join(KINDS)})", *where)
    allowed = frozenset({"kind", *(f.name for f in fields(KINDS[kind]))})
    reader.check_keys(table, allowed, *where)
    params = {key: value for key, value in table.items() if key != "kind"}
    try:
        return parse_fault(kind, params)
    except FaultError as exc:
        named = re.search(r"parameter '(\w+)'", str(exc))
        raise reader.fail(f"fault {kind}: {exc}", *where,
                          named[1] if named else "kind") from None
