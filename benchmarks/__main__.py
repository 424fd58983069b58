"""`python -m benchmarks` (`make bench`): run the benchmarks, write docs/benchmarks.{md,json}.

Options: --quick (tiny sizes: proves the machinery, used by the test suite), --only NAME
(fanout, pressure, capacity, storm, window, timeline, proxy, persistence, profiles;
repeatable),
--repeat N (default 3), --out DIR (default docs/), --contender NAME (fan-out contenders to
run; repeatable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    capacity,
    fanout,
    persistence,
    pressure,
    profiling,
    proxy,
    report,
    storm,
    timeline,
    window,
)
from benchmarks.common import ROOT, machine, raise_nofile

NAMES = ("fanout", "pressure", "capacity", "storm", "window", "timeline", "proxy",
         "persistence", "profiles")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only this one")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per benchmark (>= 1)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the results go")
    parser.add_argument("--contender", action="append", choices=fanout.CONTENDERS,
                        help="fan-out contender to run (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def log(line: str) -> None:
    """Progress on stderr (stdout stays free for the final JSON)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
    sys.stderr.flush()


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected benchmarks in order; each result keyed by its name."""
    names = args.only or list(NAMES)
    raise_nofile()  # 10,000 connections; every child inherits it
    results: dict[str, Any] = {}
    quick = args.quick
    if "fanout" in names:
        size = fanout.FanoutSize.quick() if quick else fanout.FanoutSize()
        if args.contender:
            size.contenders = tuple(args.contender)
        results["fanout"] = await fanout.run(size, args.repeat, log)
    if "pressure" in names:
        size = fanout.FanoutSize.quick() if quick else fanout.FanoutSize()
        results["pressure"] = await pressure.run(size, results.get("fanout"), log)
    if "capacity" in names:
        cap = capacity.CapacitySize.quick() if quick else capacity.CapacitySize()
        results["capacity"] = await capacity.run(cap, args.repeat, log)
    if "storm" in names:
        st = storm.StormSize.quick() if quick else storm.StormSize()
        results["storm"] = await storm.run(st, args.repeat, log)
    if "window" in names:
        win = window.WindowSize.quick() if quick else window.WindowSize()
        results["window"] = await window.run(win, args.repeat, log)
    if "timeline" in names:
        lanes = timeline.TimelineSize.quick() if quick else timeline.TimelineSize()
        results["timeline"] = await timeline.run(lanes, args.repeat, log)
    if "proxy" in names:
        px = proxy.ProxySize.quick() if quick else proxy.ProxySize()
        results["proxy"] = await proxy.run(px, args.repeat, log)
    if "persistence" in names:
        per = persistence.PersistenceSize.quick() if quick else persistence.PersistenceSize()
        results["persistence"] = await persistence.run(per, args.repeat, log)
    if "profiles" in names:
        prof = profiling.ProfileSize.quick() if quick else profiling.ProfileSize()
        results["profiles"] = await profiling.run(prof, args.repeat, log)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run, then write benchmarks.json and benchmarks.md into --out."""
    args = parse(argv)
    began = time.time()
    info = machine()
    results = asyncio.run(run_all(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        **results,
        "meta": {
            "machine": info,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(began)),
            "duration_s": round(time.time() - began, 1),
            "repeat": args.repeat,
            "quick": args.quick,
            "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        },
    }
    (out / "benchmarks.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "benchmarks.md").write_text(report.markdown(document))
    log(f"wrote {out / 'benchmarks.json'} and {out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
