"""The intercepting proxy: see a real app's WebSocket traffic, and hold, edit, inject and break it.

    server.py     the listener: reverse mode (one upstream) and forward mode (an HTTP proxy)
    handshake.py  the client's request passed on, the upstream's answer passed back
    relay.py      one proxied connection: both peers, both directions, the controls
    hub.py        what every connection shares: rules, held frames, faults, counters, observers
    rules.py      intercept rules (pure); rulesfile.py reads them from TOML
    record.py     the record, HAR export and replay (the local CA is core/localca.py)
    shell.py      the line commands of `wsconsole proxy`

No Qt here: `wsconsole proxy` and the window are front ends over one ProxyHub.
"""
