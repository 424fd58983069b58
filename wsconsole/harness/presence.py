"""Per-user connection counts across the cluster, kept in the broker (the per-user limit).

Each user has a sorted set of `node:conn` members scored by their expiry time. A node
claims a member when a connection of the user opens (refused at the limit, atomically in
a script), refreshes every member it holds every `refresh` seconds, and removes them as
connections end. A SIGKILLed node refreshes nothing, so its connections stop counting
after `ttl` seconds: the limit frees itself without anyone cleaning up.

While the broker is down the count is local only (availability over strictness): a
claim is granted when this node's own connections of the user are under the limit, and
registered in the broker by the first refresh after it returns.

Claims are batched: every claim made in one loop turn goes to the broker in one pipeline
(one round trip), so a burst of handshakes costs a round trip per burst, not one per
connection, and does not take a pooled broker connection each.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import NoScriptError, RedisError

from wsconsole.core.tasks import raise_if_cancelled, spawn
from wsconsole.harness.brokerlink import UP, BrokerLink, BrokerUnavailable

Claim = tuple[str, str, int, "asyncio.Future[tuple[int, int]]"]  # key, member, limit, answer

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] the user's set; ARGV member, limit (0: none), ttl ms -> {granted 0|1, count}
_CLAIM = (
    _NOW_MS
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local limit = tonumber(ARGV[2])
  if limit > 0 and count >= limit then return {0, count} end
  count = count + 1
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, count}
"""
)

# KEYS[1] the user's set; ARGV ttl ms, members... -> count
_REFRESH = (
    _NOW_MS
    + """
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
)

_COUNT = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


class Presence:
    """This node's share of every user's connection count; see the module docstring."""

    def __init__(
        self, link: BrokerLink, node_id: str, *, ttl: float, refresh: float, prefix: str
    ) -> None:
        self.link = link
        self.node_id = node_id
        self.ttl = ttl
        self.refresh_interval = refresh
        self.prefix = prefix
        self._held: dict[str, dict[str, None]] = {}  # user -> members held by this node
        self._claims: list[Claim] = []  # claims of this loop turn, sent together
        link.scripts.update(claim=_CLAIM, refresh=_REFRESH, count=_COUNT)

    def _key(self, user: str) -> str:
        return f"{self.prefix}:user:{{{user}}}:conns"

    def _member(self, conn_id: str) -> str:
        return f"{self.node_id}:{conn_id}"

    async def claim(self, user: str, conn_id: str, limit: int) -> tuple[bool, int]:
        """Count a connection for `user` across the cluster; (False, n) if at the limit."""
        member = self._member(conn_id)
        if self.link.state != UP:
            held = self._held.setdefault(user, {})
            if limit > 0 and member not in held and len(held) >= limit:
                return False, len(held)
            held[member] = None
            return True, len(held)
        answer: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        if not self._claims:
            spawn(self._send_claims(), "presence-claims")
        self._claims.append((self._key(user), member, limit, answer))
        try:
            ok, count = await answer
        except BrokerUnavailable:
            ok, count = 1, len(self._held.get(user, ())) + 1
        if ok:
            self._held.setdefault(user, {})[member] = None
        return bool(ok), int(count)

    async def _send_claims(self) -> None:
        """Send the claims queued in this loop turn in one pipeline and answer each; a claim
        the broker could not take is answered BrokerUnavailable (granted locally)."""
        await asyncio.sleep(0)  # the rest of this loop turn's claims join the batch
        batch, self._claims = self._claims, []
        ttl = int(self.ttl * 1000)
        results: list[object] = []
        try:
            results = await self._pipeline(batch, ttl)
            if any(isinstance(r, NoScriptError) for r in results):  # a broker that restarted
                await self.link.load_scripts()
                results = await self._pipeline(batch, ttl)
        except (RedisError, OSError, TimeoutError) as exc:
            self.link.mark_down(exc)
        finally:  # every claim gets an answer, even when this task is cancelled
            for index, (_, _, _, answer) in enumerate(batch):
                result = results[index] if index < len(results) else None
                if answer.done():
                    continue
                if isinstance(result, list | tuple):
                    answer.set_result((int(result[0]), int(result[1])))
                else:
                    answer.set_exception(BrokerUnavailable(f"presence claim failed: {result}"))

    async def _pipeline(self, batch: list[Claim], ttl: int) -> list[object]:
        pipe = self.link.redis.pipeline(transaction=False)
        sha = self.link.sha["claim"]
        for key, member, limit, _ in batch:
            pipe.execute_command("EVALSHA", sha, 1, key, member, limit, ttl)
        return list(await pipe.execute(raise_on_error=False))

    async def release(self, user: str, conn_id: str) -> None:
        """Forget a connection of `user` (best effort; it expires anyway)."""
        member = self._member(conn_id)
        held = self._held.get(user)
        if held is not None:
            held.pop(member, None)
            if not held:
                del self._held[user]
        if self.link.state == UP:
            try:
                await self.link.redis.zrem(self._key(user), member)
            except (RedisError, OSError, TimeoutError) as exc:
                self.link.mark_down(exc)

    async def count(self, user: str) -> int:
        """How many live connections `user` holds across the cluster."""
        return int(await self.link.call("count", (self._key(user),), ()))  # type: ignore[arg-type]

    async def refresh(self) -> None:
        """Push every member this node holds `ttl` further into the future (one pipeline)."""
        if not self._held or self.link.state != UP:
            return
        ttl = int(self.ttl * 1000)
        pipe = self.link.redis.pipeline(transaction=False)
        sha = self.link.sha["refresh"]
        for user, held in self._held.items():
            pipe.execute_command("EVALSHA", sha, 1, self._key(user), ttl, *held)
        try:
            await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.link.mark_down(exc)

    async def run(self) -> None:
        """Refresh every `refresh` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.refresh()
            # a stopped node's users would keep counting if redis-py's pipeline swallowed it
            raise_if_cancelled()

    async def release_all(self, timeout: float) -> None:
        """Remove every member this node holds (a clean stop), within `timeout` seconds."""
        if self.link.state != UP or not self._held:
            return
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(timeout):
                pipe = self.link.redis.pipeline(transaction=False)
                for user, held in self._held.items():
                    pipe.zrem(self._key(user), *held)
                await pipe.execute()
