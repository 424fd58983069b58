"""The headless application model the window shows (no Qt; import-linter checks it).

Sessions and the demo cluster (`console`), the frame store, the timeline model, connection
profiles and the client they build (`profiles`, `targets`), the injector and scenario runs,
and the error hub. The window (`wsconsole.gui`) is given these objects and pulls from them on
its timers; everything here runs and tests without a display.
"""
