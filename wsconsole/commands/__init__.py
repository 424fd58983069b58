"""Sub-commands of the `wsconsole` CLI; each module is thin over the same APIs the GUI uses."""
