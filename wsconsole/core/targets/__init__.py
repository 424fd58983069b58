"""Non-WebSocket targets (Socket.IO, Server-Sent Events) emitting the client's core events.

Each target is a `core.driver.ConnectionDriver`, like `core.client.ReconnectingClient`:
the same surface (start, stop, wait_state, wait_closed, subscribe, state, lifecycle,
stats, latency, next_attempt, final_error), the same reconnect loop and decisions, and
the same events (FrameRecord / Transition / HeartbeatEvent / ErrorEvent), so the Frames
view, the Timeline, the plots and `wsconsole connect` treat every target alike.
"""
