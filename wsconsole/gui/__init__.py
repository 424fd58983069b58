"""The Qt console, and the only Qt in wsconsole: the window, its panels and dialogs over `app`."""
