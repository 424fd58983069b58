"""Where the broker is: one server or a Redis/Valkey Cluster, from one `--redis` URL.

`redis://[user:password@]HOST:PORT[,HOST:PORT...][/DB]` (or `rediss://`, `valkey://`,
`valkeys://`; `unix:///path` for one local server). Several addresses are the seed nodes of a
cluster; one address may be either, and `is_cluster` asks it (`INFO cluster`:
`cluster_enabled:1`), so `--redis redis://any-node:7000` is enough for a managed cluster.
`open_client` returns redis-py's asyncio client of the right kind: `Redis` for one server,
`RedisCluster` (slot map, MOVED/ASK, reconnects) for a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from wsconsole.errors import WsconsoleError

SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")
DEFAULT_PORT = 6379


class BrokerUnavailable(WsconsoleError, RuntimeError):
    """The broker cannot take the request now (down, or the publish backlog is full)."""


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed `--redis` URL: scheme, credentials, seed addresses, database, query."""

    scheme: str
    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    db: int = 0
    query: str = ""
    path: str = ""  # unix:// only

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a URL (ValueError saying what is wrong)."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SCHEMES:
            raise ValueError(f"not a Redis URL: {url!r} (expected redis://host:port)")
        if scheme == "unix":
            return cls(scheme, (), path=rest.partition("?")[0], query=rest.partition("?")[2])
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        seeds = tuple(_host_port(item, url) for item in hosts.split(",") if item)
        if not seeds:
            raise ValueError(f"no host in the Redis URL {url!r}")
        db = 0
        if path:
            if not path.isdigit():
                raise ValueError(f"the database in {url!r} must be a number")
            db = int(path)
        return cls(scheme, seeds, username, password, db, query)

    @property
    def several(self) -> bool:
        """More than one seed: only a cluster has several."""
        return len(self.seeds) > 1

    def seed_url(self, index: int = 0) -> str:
        """A one-server URL for one seed (what redis-py's from_url takes)."""
        if self.scheme == "unix":
            return f"unix://{self.path}" + (f"?{self.query}" if self.query else "")
        host, port = self.seeds[index]
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        host_text = f"[{host}]" if ":" in host else host
        tail = f"/{self.db}" + (f"?{self.query}" if self.query else "")
        scheme = {"valkey": "redis", "valkeys": "rediss"}.get(self.scheme, self.scheme)
        return f"{scheme}://{auth}{host_text}:{port}{tail}"

    @property
    def tls(self) -> bool:
        """rediss:// or valkeys://."""
        return self.scheme in ("rediss", "valkeys")


def _host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"an empty host in the Redis URL {url!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r} in the Redis URL {url!r}")
    return host, int(port_text)


async def is_cluster(address: BrokerAddress, timeout: float = 2.0) -> bool:
    """True when the broker is a cluster: several seeds, or the first seed that answers says
    `cluster_enabled:1` (OSError/RedisError when none answers)."""
    if address.several:
        return True
    if address.scheme == "unix":
        return False
    client = aioredis.Redis.from_url(
        address.seed_url(), socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        info = await client.info("cluster")
    finally:
        await client.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


def cluster_client(address: BrokerAddress, **options: Any) -> RedisCluster:
    """redis-py's asyncio cluster client on the seeds (options: socket_timeout, ...)."""
    if address.db:
        raise ValueError("a Redis Cluster has only database 0")
    nodes = [ClusterNode(host, port) for host, port in address.seeds]
    return RedisCluster(
        startup_nodes=nodes, username=address.username, password=address.password,
        ssl=address.tls, require_full_coverage=False, **options,
    )  # fmt: skip


async def open_client(
    url: str, *, timeout: float = 2.0, cluster: bool | None = None
) -> aioredis.Redis | RedisCluster:
    """A client of the right kind for `url` (ValueError for a bad URL, OSError/RedisError
    when the broker cannot be asked what it is)."""
    address = BrokerAddress.parse(url)
    if cluster is None:
        try:
            cluster = await is_cluster(address, timeout)
        except RedisError as exc:
            raise OSError(f"the broker at {address.seed_url()} does not answer: {exc}") from None
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if cluster:
        return cluster_client(address, **options)
    return aioredis.Redis.from_url(address.seed_url(), **options)
