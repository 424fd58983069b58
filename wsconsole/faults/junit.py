"""JUnit XML for probe runs, so CI systems show each catalogue case and audit check as a test.

One `<testsuite>` for the catalogue cases and one for the audit findings, inside
`<testsuites>`. `fail` becomes `<failure>`, `error` becomes `<error>`, `n/a` becomes
`<skipped>`; a lenient pass is a pass with the reason in `<system-out>`.
Built with xml.etree, which escapes text and attributes correctly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from wsconsole.faults.audit import Finding, Status
from wsconsole.faults.probe import CaseResult, Verdict

_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\t\n\r"}


def _clean(text: str) -> str:
    """XML 1.0 has no way to carry most control characters: show them escaped instead."""
    return text.translate(_CONTROL)


def _suite(name: str, tests: int, failures: int, errors: int, skipped: int, time: float
           ) -> ET.Element:
    return ET.Element("testsuite", {
        "name": name,
        "tests": str(tests),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{time:.3f}",
    })


def _case_suite(results: Sequence[CaseResult]) -> ET.Element:
    count = {v: sum(1 for r in results if r.verdict is v) for v in Verdict}
    suite = _suite(
        "wsconsole probe: catalogue", len(results), count[Verdict.FAIL], count[Verdict.ERROR],
        count[Verdict.NOT_APPLICABLE], sum(r.duration for r in results),
    )
    for result in results:
        case = result.case
        element = ET.SubElement(suite, "testcase", {
            "name": case.id,
            "classname": f"wsconsole.probe.{case.layer.value}",
            "time": f"{result.duration:.3f}",
        })
        message = _clean(f"expected {case.expected.describe()}; observed {result.observed}")
        if result.verdict is Verdict.FAIL:
            ET.SubElement(element, "failure", {"message": message, "type": "fail"}).text = (
                f"RFC 6455 {case.section}: {case.title}\n{result.reason}"
            )
        elif result.verdict is Verdict.ERROR:
            ET.SubElement(element, "error", {"message": _clean(result.observed), "type": "error"})
        elif result.verdict is Verdict.NOT_APPLICABLE:
            ET.SubElement(element, "skipped", {"message": result.reason})
        ET.SubElement(element, "system-out").text = (
            f"{result.verdict.value}: {message} ({_clean(result.reason)})"
        )
    return suite


def _audit_suite(findings: Sequence[Finding]) -> ET.Element:
    failures = sum(1 for f in findings if f.status is Status.FAIL)
    skipped = sum(1 for f in findings if f.status is Status.NOT_APPLICABLE)
    suite = _suite("wsconsole probe: audit", len(findings), failures, 0, skipped, 0.0)
    for finding in findings:
        element = ET.SubElement(suite, "testcase", {
            "name": finding.check,
            "classname": "wsconsole.audit",
            "time": "0.000",
        })
        if finding.status is Status.FAIL:
            failure = {"message": _clean(finding.detail), "type": "fail"}
            ET.SubElement(element, "failure", failure).text = finding.title
        elif finding.status is Status.NOT_APPLICABLE:
            ET.SubElement(element, "skipped", {"message": _clean(finding.detail)})
        ET.SubElement(element, "system-out").text = _clean(
            f"{finding.status.value}: {finding.detail}"
        )
    return suite


def to_xml(results: Sequence[CaseResult], findings: Sequence[Finding] = ()) -> bytes:
    """The JUnit XML document (UTF-8, with declaration) for cases and audit findings."""
    root = ET.Element("testsuites", {"name": "wsconsole probe"})
    suites = [_case_suite(results)]
    if findings:
        suites.append(_audit_suite(findings))
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in suites):.3f}")
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: str | Path, results: Sequence[CaseResult],
                findings: Sequence[Finding] = ()) -> None:
    """Write the JUnit XML file (parent directory must exist)."""
    Path(path).write_bytes(to_xml(results, findings))
