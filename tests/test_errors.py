"""One exception base: every exception class wsconsole defines derives from WsconsoleError,
so a front end can catch what wsconsole raised on purpose apart from Python's own errors."""

from __future__ import annotations

import importlib
import pkgutil

import wsconsole
from wsconsole.errors import WsconsoleError


def _defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a wsconsole module (the GUI's included)."""
    for info in pkgutil.walk_packages(wsconsole.__path__, "wsconsole."):
        if info.name != "wsconsole.__main__":
            importlib.import_module(info.name)
    found: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [BaseException]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "wsconsole":
            found.append(cls)
    return found


def test_every_exception_derives_from_the_one_base() -> None:
    defined = _defined_exceptions()
    assert len(defined) > 30  # the walk really saw the package
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in defined
                    if not issubclass(c, WsconsoleError))
    assert strays == []


def test_the_builtin_bases_callers_catch_are_kept() -> None:
    """Bad input stays a ValueError (argparse types, `except ValueError` callers), a lookup a
    LookupError, a timeout a TimeoutError, alongside the common base."""
    from wsconsole.app.options import OptionsError
    from wsconsole.core.backoff import BackoffError
    from wsconsole.core.client import ClientOptionsError
    from wsconsole.core.targets.socketio import AckTimeout
    from wsconsole.faults.case import UnknownCase
    from wsconsole.har import HarError
    from wsconsole.harness.adapter import RecoveryWindowExceeded

    for error in (OptionsError, BackoffError, ClientOptionsError, HarError):
        assert issubclass(error, ValueError) and issubclass(error, WsconsoleError)
    assert issubclass(UnknownCase, KeyError)
    assert issubclass(RecoveryWindowExceeded, LookupError)
    assert issubclass(AckTimeout, TimeoutError)
