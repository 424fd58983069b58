"""stop_on_signals: each SIGINT/SIGTERM inside the block asks to stop; after it both are
ignored, so a repeated Ctrl-C cannot kill a command while it writes its summary."""

from __future__ import annotations

import os
import signal

from tests.support import until
from wsconsole.core.signals import STOP_SIGNALS, stop_on_signals


async def test_each_signal_in_the_block_asks_to_stop_and_both_are_ignored_after_it() -> None:
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    calls: list[str] = []
    try:
        with stop_on_signals(lambda: calls.append("stop")):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: len(calls) == 2, "a stop() per signal")
        assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == {
            signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert calls == ["stop", "stop"]
