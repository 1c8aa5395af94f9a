"""A Redis primary found through Sentinel: the ``redis+sentinel://`` URL, and the clients and
Celery URLs made from it.

``redis+sentinel://[[user]:password@]host1:port1,host2:port2,.../MASTER_NAME[/DB][?sentinel_password=…]``
names the sentinels of one group and the group's name (`sentinel monitor MASTER_NAME ...`); the
password is the primary's (``requirepass``), ``sentinel_password`` the sentinels' own
(``OMNIBIND_REDIS__SENTINEL_PASSWORD`` puts it there, percent-encoded). Every client omnibind
makes from such a URL asks the sentinels where the primary is at each (re)connect (redis-py's
``Sentinel.master_for``), and a connection still open to a demoted primary is closed on its
first READONLY reply, so after a failover every process follows the new primary by itself.
Celery's broker and result backend get the same sentinels in their own
``sentinel://host:port;sentinel://...`` form plus the ``master_name`` transport option
(`kombu_url`, `shared.queue.celery_config`).

Pure parsing here, no I/O: `sentinel_client` connects lazily, like every redis-py client.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import redis
from redis.sentinel import Sentinel

from shared.errors import ConfigError

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """Where the primary of one Sentinel group is asked for."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the primary's (and its replicas'), not the sentinels'
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() == SCHEME


def sentinel_url_problem(url: str) -> str | None:
    """Why `url` is not a usable ``redis+sentinel://`` URL, in words that quote no password;
    None when it is."""
    try:
        parse_sentinel_url(url)
    except ConfigError as exc:
        return str(exc)
    return None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The `SentinelTarget` of a ``redis+sentinel://`` URL; `ConfigError` (quoting no password)
    when it is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SCHEME:
        raise ConfigError(f"expected {SCHEME}://host:port,.../master_name")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) or None
        password = urllib.parse.unquote(secret) if colon else urllib.parse.unquote(user)
        if not colon:  # redis://secret@host: a lone userinfo is the password, as redis-py reads it
            username = None
    sentinels = tuple(_host_port(part) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ConfigError(f"{SCHEME}:// URL names no sentinel (host:port,host:port,...)")
    path, _, query = path.partition("?")
    options = urllib.parse.parse_qs(query)
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ConfigError(f"{SCHEME}:// URL: unknown option {unknown[0]!r} (only sentinel_password)")
    sentinel_password = options["sentinel_password"][-1] if "sentinel_password" in options else None
    segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigError(f"{SCHEME}:// URL needs the group's name and at most a db after it: .../MASTER_NAME[/DB]")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(f"{SCHEME}:// URL: db must be a number, not {segments[1]!r}")
        db = int(segments[1])
    return SentinelTarget(sentinels, segments[0], db, username, password, sentinel_password)


def _host_port(part: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [::1]:26379
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        raise ConfigError(f"{SCHEME}:// URL: sentinel {part!r} has no host")
    if port and not port.isdigit():
        raise ConfigError(f"{SCHEME}:// URL: sentinel {host!r} has a port that is not a number")
    number = int(port) if port else DEFAULT_SENTINEL_PORT
    if not 0 < number < 65536:
        raise ConfigError(f"{SCHEME}:// URL: sentinel {host!r} has port {number}, outside 1-65535")
    return host, number


def kombu_url(target: SentinelTarget) -> str:
    """The form kombu's and Celery's sentinel transport and result backend read:
    ``sentinel://[:password@]host:port/db;sentinel://...`` (the group's name goes into the
    ``master_name`` transport option)."""
    auth = ""
    if target.password is not None:
        user = urllib.parse.quote(target.username or "", safe="")
        auth = f"{user}:{urllib.parse.quote(target.password, safe='')}@"
    return ";".join(f"sentinel://{auth}{_netloc_host(host)}:{port}/{target.db}" for host, port in target.sentinels)


def _netloc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def with_sentinel_password(url: str, password: str) -> str:
    """`url` with `password` as its ``sentinel_password`` option (percent-encoded, any
    characters), replacing one already there."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "sentinel_password"]
    return f"{base}?{urllib.parse.urlencode([*kept, ('sentinel_password', password)])}"


def sentinel_transport_options(target: SentinelTarget) -> dict[str, Any]:
    """kombu's and Celery's options for `kombu_url(target)`: the group's name, and the
    sentinels' password if they have one."""
    options: dict[str, Any] = {"master_name": target.master}
    if target.sentinel_password is not None:
        options["sentinel_kwargs"] = {"password": target.sentinel_password}
    return options


def sentinel_client(target: SentinelTarget, **connection: Any) -> redis.Redis:
    """A client of the group's current primary; `connection` (timeouts, retry, decoding...)
    applies to the primary's connections and to the sentinels'. No I/O until the first
    command."""
    sentinel_kwargs = {k: v for k, v in connection.items() if k not in ("decode_responses", "health_check_interval")}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **connection)
    credentials: dict[str, Any] = {"db": target.db}
    if target.password is not None:
        credentials["password"] = target.password
    if target.username is not None:
        credentials["username"] = target.username
    return sentinel.master_for(target.master, redis_class=redis.Redis, **credentials)
