"""A room's state in the broker: its keys and the Lua scripts that change it atomically.

A room is its sequence counter, its bounded history, its *epoch* (the identity of that
sequence space: a random id created with the room's state by whichever script touches the
room first, so a broker that lost its state starts the room under a new epoch, never
silently under the old numbers), the publish ids it has seen, and, on a replicated cluster,
how far its frames have been released. Every key and the pub/sub channel carry the room in
one hash tag (`ws:{ROOM}:seq`, `ws:room:{ROOM}`), so on a Redis/Valkey Cluster they share one
slot and each script stays one atomic step on one shard, SPUBLISH included.

Publishing is one script on a single server: create the epoch if the room has none, check
the publish id (a re-send returns the original epoch and seq and is not delivered again),
INCR the sequence, append the ready-to-send frame to the history (LPUSH + LTRIM) and PUBLISH
it. On a cluster whose publishes must survive a primary's death it is two steps around
`WAIT` (publisher.py): the same script without the fan-out, then, once the replicas have the
writes, `RELEASE` fans the room's frames out up to the seq that was confirmed. A frame is
therefore never seen by anyone before it is durable: a primary that dies with writes its
replica lacks takes only frames nobody saw and publishes nobody was told were accepted, so
the promoted replica's numbers can be handed out again without any subscriber holding an
old frame under the same number. The snapshot reads only what was released.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoomKeys:
    """The broker keys and the pub/sub channel of one room."""

    seq: str
    hist: str
    epoch: str
    released: str
    channel: bytes
    ids: str  # the prefix of its publish-id keys

    @classmethod
    def of(cls, prefix: str, room: str) -> RoomKeys:
        """The keys of `room` under `prefix` (the adapter's, "ws" by default)."""
        tag = f"{prefix}:{{{room}}}"
        return cls(f"{tag}:seq", f"{tag}:hist", f"{tag}:epoch", f"{tag}:rel",
                   channel_of(prefix, room), f"{tag}:id:")

    def publish_id(self, pub_id: str) -> str:
        """The key remembering one publish id."""
        return self.ids + pub_id


def channel_prefix(prefix: str) -> bytes:
    """What every room channel starts with."""
    return f"{prefix}:room:{{".encode()


def channel_of(prefix: str, room: str) -> bytes:
    """The pub/sub channel of a room (hash-tagged like its keys)."""
    return channel_prefix(prefix) + room.encode() + b"}"


def room_of(prefix: bytes, channel: bytes) -> str | None:
    """The room a channel carries (None for another channel)."""
    if not channel.startswith(prefix) or not channel.endswith(b"}"):
        return None
    return channel[len(prefix) : -1].decode("utf-8", "replace")


def new_epoch() -> str:
    """A candidate epoch id (used only if the room has none): 12 random hex digits."""
    return secrets.token_hex(6)


# Every script starts the same way: a room without an epoch gets one (the caller's
# candidate) and starts empty, so an epoch always names exactly one sequence space.
_EPOCH = """
local epoch = redis.call('GET', KEYS[EPOCH])
if not epoch then
  epoch = ARGV[CANDIDATE]
  redis.call('SET', KEYS[EPOCH], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
end
"""

# KEYS: seq, history, publish id, epoch. ARGV: channel, frame parts (before the epoch,
# between epoch and seq, after the seq), history size, id ttl ms, candidate epoch.
# -> {seq, 1 if the id was seen before, epoch}
_PUBLISH = _EPOCH.replace("EPOCH", "4").replace("CANDIDATE", "7") + """
local prev = redis.call('GET', KEYS[3])
if prev then
  local space = string.find(prev, ' ', 1, true)
  if space and string.sub(prev, 1, space - 1) == epoch then
    return {tonumber(string.sub(prev, space + 1)), 1, epoch}
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], epoch .. ' ' .. seq, 'PX', ARGV[6])
local frame = ARGV[2] .. epoch .. ARGV[3] .. seq .. ARGV[4]
redis.call('LPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
FANOUT
return {seq, 0, epoch}
"""
_FANOUT = "redis.call('COMMAND', ARGV[1], epoch .. ' ' .. seq .. '\\n' .. frame)"


def publish_script(command: str, deferred: bool) -> str:
    """The publish script fanning out with `command` (PUBLISH, SPUBLISH), or, `deferred`,
    not at all (RELEASE does it once the replicas have the writes)."""
    fanout = "" if deferred else _FANOUT.replace("COMMAND", command)
    return _PUBLISH.replace("FANOUT", fanout)


# The released position "epoch seq" in KEYS[4] (a snapshot script) as `top`: 0 when it names
# another epoch or is missing.
_RELEASED = """
local top = 0
local rel = redis.call('GET', KEYS[4])
if rel then
  local space = string.find(rel, ' ', 1, true)
  if space and string.sub(rel, 1, space - 1) == epoch then
    top = tonumber(string.sub(rel, space + 1))
  end
end
"""

# KEYS: seq, history, epoch, released. ARGV: confirmed seq, channel, candidate epoch, the
# epoch it was confirmed in. Fans out every frame after the released position up to the
# confirmed seq, in order, and moves the position. -> frames fanned out
_RELEASE = _EPOCH.replace("EPOCH", "3").replace("CANDIDATE", "3") + _RELEASED + """
if ARGV[4] ~= epoch then return 0 end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local upto = math.min(tonumber(ARGV[1]), cur)
if upto <= top then return 0 end
local frames = redis.call('LRANGE', KEYS[2], cur - upto, cur - top - 1)
for i = #frames, 1, -1 do
  redis.call('COMMAND', ARGV[2], epoch .. ' ' .. (upto - i + 1) .. '\\n' .. frames[i])
end
redis.call('SET', KEYS[4], epoch .. ' ' .. upto)
return #frames
"""


def release_script(command: str) -> str:
    """The script fanning a room's confirmed frames out with `command` (SPUBLISH)."""
    return _RELEASE.replace("COMMAND", command)


# KEYS: seq, history, epoch, released. ARGV: since (-1: none), the epoch `since` belongs to
# ('': not given, read in the current one), candidate epoch, '1' when frames are released
# after WAIT (then only released ones are read), the epoch and seq the caller has already
# handed over ('' and -1: nothing), the room's channel.
# -> {current seq, status, first seq kept, frames newest first, epoch, reset}; status 0 ok,
# 1 beyond the window, 2 `since` ahead of the room; reset 1 when the epoch given is not the
# room's (then `since` counts from the new epoch's start). A `since` ahead of the room in its
# own epoch means the broker lost acknowledged writes (an external server restored from an
# old copy): the numbers after its seq would be handed out twice, so the room starts again
# under a new epoch, which every member is told. A `since` between the released position and
# the seq was released by a primary that died before its replica had the new position (the
# frames themselves were confirmed): it is the position. So is the caller's own handed-over
# seq when it is there: a join on a node that already fanned out frames the promoted replica
# has not marked released must get them from the history, not a seq behind them, or the
# member, in from that seq, would never see the frames the node delivered before it joined.
# Moving the released position up is a release: the frames it passes are fanned out again
# (SPUBLISH: deferred release is a cluster's), since a node whose subscription broke with the
# dead primary may have missed them and, with nothing published after them, would never
# see a gap to catch up from; the nodes that have them drop the repeats.
SNAPSHOT = _EPOCH.replace("EPOCH", "3").replace("CANDIDATE", "3") + """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local reset = 0
if ARGV[2] ~= '' and ARGV[2] == epoch and since > cur then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
  cur = 0
end
if ARGV[2] ~= '' and ARGV[2] ~= epoch then
  reset = 1
  since = 0
end
local top = cur
if ARGV[4] == '1' then
""" + _RELEASED.replace("\nlocal top = 0", "\ntop = 0") + """
  local floor = since
  local known = tonumber(ARGV[6])
  if ARGV[5] == epoch and known > floor and known <= cur then floor = known end
  if floor > top then
    local passed = redis.call('LRANGE', KEYS[2], cur - floor, cur - top - 1)
    for i = #passed, 1, -1 do
      redis.call('SPUBLISH', ARGV[7], epoch .. ' ' .. (floor - i + 1) .. '\\n' .. passed[i])
    end
    top = floor
    redis.call('SET', KEYS[4], epoch .. ' ' .. top)
  end
end
local n = redis.call('LLEN', KEYS[2])
local first = cur - n + 1
if since < 0 or since == top then return {top, 0, first, {}, epoch, reset} end
if since > top then return {top, 2, first, {}, epoch, reset} end
if since + 1 < first then return {top, 1, first, {}, epoch, reset} end
return {top, 0, first, redis.call('LRANGE', KEYS[2], cur - top, cur - since - 1), epoch, reset}
"""

