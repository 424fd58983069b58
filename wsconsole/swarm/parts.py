"""A swarm split into parts: which clients each worker runs, and the config they share.

Every worker runs the same `SwarmConfig`, restricted to a contiguous slice of client indices
(`split`), so users, rooms, tokens and publish ids are those a one-process swarm gives them.
The config travels to the workers as JSON (`config_to_wire` / `config_from_wire`); a JWT
secret never does: the wire names the environment variable that holds it on the worker's
host (`secret_env`), as the agents' own secret is given.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from wsconsole.core.backoff import BackoffError, BackoffPolicy
from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError

BACKOFF = ("initial", "factor", "cap", "jitter", "max_attempts")
NOT_SHIPPED = ("stack", "token_factory", "secret", "backoff", "pongs")


def split(clients: int, workers: int) -> list[range]:
    """`clients` indices in `workers` contiguous slices, sizes differing by at most one."""
    if workers < 1:
        raise SwarmConfigError(f"--workers must be at least 1, not {workers}")
    if workers > clients:
        raise SwarmConfigError(f"{workers} workers for {clients} clients: every worker needs "
                               "at least one client (lower --workers or raise --clients)")
    size, extra = divmod(clients, workers)
    parts, start = [], 0
    for k in range(workers):
        stop = start + size + (k < extra)
        parts.append(range(start, stop))
        start = stop
    return parts


def config_to_wire(config: SwarmConfig, secret_env: str | None) -> dict[str, Any]:
    """The config as JSON-ready values for the workers; the JWT secret goes as the name of
    the variable holding it (SwarmConfigError for what cannot travel: a stack swarm, a
    token factory, a secret without its variable)."""
    if config.stack is not None:
        raise SwarmConfigError("swarm workers run harness-protocol clients; a --stack swarm "
                               "runs in one process")
    if config.token_factory is not None:
        raise SwarmConfigError("a token factory cannot be sent to workers: give a token or "
                               "the JWT secret's variable (--secret-env)")
    if config.secret is not None and not secret_env:
        raise SwarmConfigError("the workers read the JWT secret from a variable: --secret-env")
    wire = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in NOT_SHIPPED}
    wire["backoff"] = {name: getattr(config.backoff, name) for name in BACKOFF}
    wire["pongs"] = config.pongs.text()
    wire["secret_env"] = secret_env if config.secret is not None else None
    return wire


def config_from_wire(wire: dict[str, Any]) -> SwarmConfig:
    """The config a coordinator sent, checked like one given on the command line; the JWT
    secret read from this host's environment (SwarmConfigError naming what is wrong)."""
    try:
        values = dict(wire)
        backoff = BackoffPolicy(**values.pop("backoff"))
        pongs = PongPolicy.parse(values.pop("pongs"))
        secret_env = values.pop("secret_env")
        secret = None
        if secret_env:
            secret = os.environ.get(secret_env)
            if not secret:
                raise SwarmConfigError(f"environment variable {secret_env} (the JWT secret) "
                                       "is not set on this host")
        config = SwarmConfig(backoff=backoff, pongs=pongs, secret=secret, **values)
    except (KeyError, TypeError, BackoffError, ClientOptionsError) as exc:
        raise SwarmConfigError(f"the coordinator's config cannot be read: {exc}") from None
    config.validate()
    return config
