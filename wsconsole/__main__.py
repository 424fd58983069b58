"""`python -m wsconsole` is the same as the `wsconsole` command."""

from wsconsole.cli import main

raise SystemExit(main())
