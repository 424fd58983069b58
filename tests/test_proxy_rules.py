"""Intercept rules (pure) and the strict rules file: matches, actions, rewrites, bad input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from wsconsole.cli import main
from wsconsole.core.events import Direction, Opcode
from wsconsole.proxy.rules import (
    Action,
    Message,
    Rule,
    RuleError,
    RuleSet,
    json_values,
    parse_json_path,
)
from wsconsole.proxy.rulesfile import RulesFileError, parse_rules


def text(payload: str, direction: Direction = Direction.OUT) -> Message:
    return Message(direction, Opcode.TEXT, payload.encode(), "ws://app.test/chat")


def test_json_paths_reach_keys_indexes_quoted_keys_and_wildcards() -> None:
    doc = {"a": {"b": [1, {"c": "x"}]}, "odd key": 5, "items": [{"id": 1}, {"id": 2}]}
    assert list(json_values(doc, parse_json_path("$.a.b[1].c"))) == ["x"]
    assert list(json_values(doc, parse_json_path("$['odd key']"))) == [5]
    assert list(json_values(doc, parse_json_path("$.items[*].id"))) == [1, 2]
    assert list(json_values(doc, parse_json_path("$.a.missing"))) == []
    with pytest.raises(RuleError, match="starts with"):
        parse_json_path("a.b")
    with pytest.raises(RuleError, match="not understood"):
        parse_json_path("$.a..b")


def test_match_by_direction_opcode_substring_regex_json_and_url() -> None:
    order = '{"type": "order", "price": 10, "ok": true}'
    assert Rule("r", Action.DROP, direction="out", contains="order").match(text(order))
    assert not Rule("r", Action.DROP, direction="in").match(text(order))
    assert not Rule("r", Action.DROP, opcode="binary").match(text(order))
    assert Rule("r", Action.DROP, json_path="$.type", equals="order").match(text(order))
    assert not Rule("r", Action.DROP, json_path="$.type", equals="quote").match(text(order))
    assert Rule("r", Action.DROP, json_path="$.price").match(text(order))
    # a JSON true is not the number 1, and a non-JSON payload never matches a path
    assert not Rule("r", Action.DROP, json_path="$.ok", equals=1).match(text(order))
    assert not Rule("r", Action.DROP, json_path="$.type").match(text("not json"))
    found = Rule("r", Action.DROP, regex=r"price\": (\d+)").match(text(order))
    assert found and found[1] == "10"
    assert Rule("r", Action.DROP, url="ws://app.test/*").match(text(order))
    assert not Rule("r", Action.DROP, url="ws://other/*").match(text(order))
    assert not Rule("r", Action.DROP, enabled=False).match(text(order))
    pong = Message(Direction.IN, Opcode.PONG, b"p")
    assert Rule("r", Action.DROP, opcode="pong", direction="in").match(pong)
    assert not Rule("r", Action.DROP).match(pong)  # the default is data frames only


def test_the_first_enabled_match_decides_and_rewrites_give_new_payloads() -> None:
    rules = RuleSet([
        Rule("off", Action.DROP, contains="order", enabled=False),
        Rule("zero", Action.REWRITE, json_path="$.type", equals="order",
             set={"$.price": 0, "$.note": "edited"}),
        Rule("never", Action.DROP, contains="order"),
    ])
    decision = rules.decide(text('{"type": "order", "price": 10}'))
    assert decision is not None and decision.rule.name == "zero"
    assert orjson.loads(decision.payload) == {"type": "order", "price": 0, "note": "edited"}
    assert rules.decide(text('{"type": "quote"}')) is None
    template = Rule("t", Action.REWRITE, regex=r"hello (\w+)",
                    template='{"greeted": "{1}", "was": {json:$.x}, "all": "{payload}"}')
    assert template.rewrite(text("hello bob"), template.match(text("hello bob"))) == (
        b'{"greeted": "bob", "was": null, "all": "hello bob"}')
    replace = Rule("r", Action.REWRITE, regex=r"\d+", replace="N")
    assert replace.rewrite(text("a1b22"), True) == b"aNbN"


@pytest.mark.parametrize(("fields", "key"), [
    ({"action": "rewrite"}, "action"),
    ({"action": "rewrite", "template": "x", "set": {"$.a": 1}}, "set"),
    ({"action": "rewrite", "replace": "x"}, "replace"),
    ({"action": "rewrite", "template": "{1}"}, "template"),
    ({"action": "delay"}, "delay_ms"),
    ({"action": "duplicate", "copies": 0}, "copies"),
    ({"action": "duplicate", "opcode": "close"}, "action"),
    ({"action": "drop", "regex": "("}, "regex"),
    ({"action": "drop", "equals": 3}, "equals"),
    ({"action": "drop", "template": "x"}, "template"),
    ({"action": "hold", "on_timeout": "later"}, "on_timeout"),
    ({"action": "explode"}, "action"),
])
def test_rules_that_cannot_work_are_refused_naming_the_setting(fields: dict, key: str) -> None:
    with pytest.raises(RuleError) as caught:
        Rule("r", **fields)
    assert caught.value.key == key


RULES = """\
# hold orders for review, drop pongs to the client
[[rule]]
name = "hold orders"
direction = "out"
json_path = "$.type"
equals = "order"
action = "hold"
timeout = 30

[[rule]]
direction = "in"
opcode = "pong"
action = "drop"

[[fault]]
kind = "latency"
ms = 50
"""


def test_a_rules_file_loads_rules_in_order_and_faults() -> None:
    loaded = parse_rules(RULES, "rules.toml")
    assert [r.name for r in loaded.rules] == ["hold orders", "rule 2"]
    assert loaded.rules[0].timeout == 30 and loaded.rules[1].opcode == "pong"
    assert [f.to_dict() for f in loaded.faults] == [
        {"kind": "latency", "ms": 50.0, "jitter_ms": 0.0}]


@pytest.mark.parametrize(("change", "line", "reason"), [
    (("equals = \"order\"", "equals = \"order\"\ncolour = \"red\""), 7, "unknown key 'colour'"),
    (("timeout = 30", "timeout = \"soon\""), 8, "timeout must be a number"),
    (("action = \"hold\"", "action = \"hodl\""), 7, "action must be one of"),
    (("opcode = \"pong\"", "opcode = \"pong\"\nregex = \"[\""), 13, "regex '[' is not valid"),
    (("ms = 50", "ms = -5"), 17, "fault latency: parameter 'ms' must be a finite number >= 0"),
    (("ms = 50", "ms = 50\nhops = 2"), 18, "unknown key 'hops'"),
    (("[[rule]]\ndirection", "[[rule]\ndirection"), 10, "not valid TOML"),
])
def test_a_bad_rules_file_names_the_line_and_the_reason(change: tuple[str, str], line: int,
                                                        reason: str) -> None:
    with pytest.raises(RulesFileError) as caught:
        parse_rules(RULES.replace(*change), "rules.toml")
    assert caught.value.line == line, str(caught.value)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"rules.toml:{line}: ")


def test_the_command_line_refuses_a_bad_rules_file_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(RULES.replace("action = \"hold\"", "action = \"hodl\""))
    code = main(["proxy", "--upstream", "ws://127.0.0.1:9", "--rules", str(path)])
    assert code == 2
    assert f"{path}:7: action must be one of" in capsys.readouterr().err


def test_the_command_line_says_which_mode_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--listen", "127.0.0.1:0"]) == 2
    assert "--upstream URL (reverse mode) or --forward" in capsys.readouterr().err
    assert main(["proxy", "--upstream", "http://x"]) == 2
    assert "ws:// or wss://" in capsys.readouterr().err
