"""Non-WebSocket targets (Socket.IO, Server-Sent Events) emitting the client's core events.

Each target is an async driver with the same surface as `core.client.ReconnectingClient`
(start, stop, wait_state, wait_closed, subscribe, state, lifecycle, stats, latency,
next_attempt, final_error) and reports FrameRecord / Transition / HeartbeatEvent /
ErrorEvent, so the Frames view, the Timeline, the plots and `wsconsole connect` work
unchanged. Reconnection is driven by our `BackoffPolicy` in every target.
"""
