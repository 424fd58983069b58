"""The headless application model the window shows (no Qt; import-linter checks it).

Sessions and the demo cluster (`console`), the frame store and its decoding, the timeline
model, the one set of connection options the CLI shares (`options`), connection profiles
and the client they build (`profiles`, `targets`), the injector and scenario runs, the error
hub, and the Protocols it drives clients and the supervisor through (`ports`). The window
(`wsconsole.gui`) is given these objects and pulls from them on its timers; everything here
runs and tests without a display.
"""
