"""A small chat/broadcast service on `websockets`, fanned out between nodes by Redis pub/sub.

Like many real ones, it has NO recovery: a message is published to Redis and every node
forwards it to the clients it holds at that moment. A client that is reconnecting (its node
was killed) misses whatever was published meanwhile, and nothing tells it so. wsconsole's
swarm counts those losses (docs/stacks.md).

Protocol (JSON text frames):
  client -> server  {"type": "join", "room": R}
                    {"type": "chat", "room": R, "id": ..., "ts": ..., ...}  (any fields)
  server -> client  {"type": "joined", "room": R}
                    the chat message as sent, plus "node": the node that delivered it

GET /metrics answers its Prometheus figures (prometheus-client): open connections, messages
published and delivered.

Environment: PORT, REDIS_URL, NODE_ID (wsconsole sets all three). SIGTERM closes the clients
with 1001 and exits.
"""

import asyncio
import json
import os
import signal
from collections import defaultdict

import redis.asyncio as redis
from prometheus_client import Counter, Gauge, generate_latest
from websockets.asyncio.server import serve

NODE = os.environ.get("NODE_ID", "node")
rooms: dict[str, set] = defaultdict(set)
CONNECTIONS = Gauge("broadcast_connections", "Open WebSocket connections")
PUBLISHED = Counter("broadcast_published", "Chat messages published to Redis")
DELIVERED = Counter("broadcast_delivered", "Chat messages written to clients")


def metrics(connection, request):
    """GET /metrics: the Prometheus text format; every other path is the WebSocket."""
    if request.path == "/metrics":
        return connection.respond(200, generate_latest().decode())
    return None


async def handle(ws, bus):
    joined = set()
    CONNECTIONS.inc()
    try:
        async for text in ws:
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            room = message.get("room")
            if message.get("type") == "join" and isinstance(room, str):
                rooms[room].add(ws)
                joined.add(room)
                await ws.send(json.dumps({"type": "joined", "room": room}))
            elif message.get("type") == "chat" and isinstance(room, str):
                await bus.publish(f"room:{room}", json.dumps(message))
                PUBLISHED.inc()
    finally:
        CONNECTIONS.dec()
        for room in joined:
            rooms[room].discard(ws)


async def fan_out(bus):
    pubsub = bus.pubsub()
    await pubsub.psubscribe("room:*")
    async for item in pubsub.listen():
        if item["type"] != "pmessage":
            continue
        room = item["channel"].decode().split(":", 1)[1]
        message = json.loads(item["data"])
        message["node"] = NODE
        text = json.dumps(message)
        for ws in list(rooms.get(room, ())):
            try:
                await ws.send(text)
                DELIVERED.inc()
            except Exception:
                rooms[room].discard(ws)


async def main():
    bus = redis.Redis.from_url(os.environ["REDIS_URL"])
    port = int(os.environ["PORT"])
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    fan = asyncio.create_task(fan_out(bus))
    async with serve(lambda ws: handle(ws, bus), "127.0.0.1", port,
                     process_request=metrics) as server:
        print(f"{NODE} listening on 127.0.0.1:{port}", flush=True)
        await stop
        print(f"{NODE} stopping: closing clients with 1001", flush=True)
        server.close(close_connections=True)
        await server.wait_closed()
    fan.cancel()


if __name__ == "__main__":
    asyncio.run(main())
