"""Entry script of the PyInstaller bundle: the same `wsconsole` command line, frozen.

`wsconsole-gui` (the windowed executable on Windows and the macOS app) always opens the
window; `wsconsole` runs sub-commands, which is how the harness starts its node, balancer
and swarm children from inside the bundle (harness/procs.child_argv).
"""

import sys
from pathlib import Path

from wsconsole.cli import gui_main, main

if __name__ == "__main__":
    if Path(sys.executable).stem.lower().endswith("-gui"):
        raise SystemExit(gui_main())
    raise SystemExit(main())
