"""Redis clients for workers and producers, and the translation of Redis failures.

Create one client per process, after fork (Celery's ``worker_process_init``): a client
owns a connection pool, and sockets must not be shared across processes. The client
reconnects with exponential backoff on connection errors, so a Redis restart (the
embedded server restarting, a failover) costs a pause, not a crash. Commands that are
retried after a dropped connection may run twice; every write omnibind makes is
idempotent or tolerant of a duplicate (see docs/redis.md).
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.config import Settings
from shared.errors import ConfigError, TransientError
from shared.redis_refusals import operator_advice
from shared.redis_sentinel import (
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_client,
    sentinel_url_problem,
    with_sentinel_password,
)

_REDACTED = "***"
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:sentinel_)?password=)[^&]*")
_URL_DELIMITERS = re.compile(r"[/?#]")
_BACKOFF_BASE_S = 0.1
_BACKOFF_CAP_S = 5.0
T = TypeVar("T")


# Error codes with which Redis refuses a command for now, not for good: full (OOM), a failed
# background save or AOF write (MISCONF: a full disk), a replica or too few replicas
# (READONLY, NOREPLICAS, MASTERDOWN), loading, a busy script, cluster resharding. redis-py
# gives some their own class; the others arrive as a plain ResponseError, and inside a Lua
# script or a pipeline the code sits after a prefix ("Error running script ...: -NOREPLICAS").
_REFUSAL = re.compile(r"(?:^|[\s:-])(OOM|MISCONF|READONLY|NOREPLICAS|MASTERDOWN|LOADING|BUSY|TRYAGAIN|CLUSTERDOWN)\b")


def is_refusal(exc: redis.ResponseError) -> bool:
    """Does `exc` say Redis refuses commands for now (full, disk error, replica...), rather
    than that the command itself is wrong?"""
    return isinstance(exc, redis.exceptions.ReadOnlyError | redis.exceptions.OutOfMemoryError) or bool(
        _REFUSAL.search(str(exc))
    )


class RedisUnavailable(TransientError):
    """Redis cannot be reached, is loading, read-only or out of memory; retry later."""

    reason = "redis_unavailable"


class _RetryUnlessRefused(Retry):
    """`Retry` that gives up at once on a refused login: a wrong password stays wrong, and
    redis-py counts authentication errors as connection errors."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if isinstance(error, redis.AuthenticationError | redis.exceptions.AuthorizationError):
                return False
            return is_retryable(error) if is_retryable is not None else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or ``?password=``) replaced by ``***``; safe to log,
    even when `url` cannot be parsed: everything before the last ``@`` after the scheme is
    hidden (a password with an unescaped ``/ ? #`` would otherwise split it elsewhere), and a
    value without ``scheme://`` is hidden whole (it may be the password itself)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _REDACTED
    rest = _QUERY_PASSWORD.sub(rf"\g<1>{_REDACTED}", rest)
    userinfo, at, after = rest.rpartition("@")
    if not at:
        return f"{scheme}://{rest}"
    user, colon, _ = userinfo.partition(":")
    if not colon:  # redis://secret@host: a lone userinfo is taken as the password by redis-py
        return f"{scheme}://{_REDACTED}@{after}"
    shown_user = "" if _URL_DELIMITERS.search(user) else user
    return f"{scheme}://{shown_user}:{_REDACTED}@{after}"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be read as a Redis URL, in words that quote no part of its password;
    None when it can."""
    _, sep, rest = url.partition("://")
    if not sep:
        return "expected scheme://…"
    userinfo, at, _ = _QUERY_PASSWORD.sub(r"\g<1>", rest).rpartition("@")
    if at and _URL_DELIMITERS.search(userinfo):
        return (
            "its user or password holds an unescaped '/', '?' or '#': percent-encode it "
            "(or leave the password out of the URL and set OMNIBIND_REDIS__PASSWORD)"
        )
    if is_sentinel_url(url):  # several host:port pairs, which urlsplit cannot read
        return sentinel_url_problem(url)
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - parsing is the check
    except ValueError as exc:  # about the host or port: the password was isolated above
        return str(exc)
    return None


def checked_url(url: str) -> str:
    """`url`, if `url_problem` finds nothing; else raises `ConfigError` with the URL redacted."""
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"invalid Redis URL {redact_url(url)}: {problem}")
    return url


def build_url(host: str, port: int, *, password: str | None = None, db: int = 0) -> str:
    """A ``redis://`` URL; the password is percent-encoded."""
    auth = f":{urllib.parse.quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def with_password(url: str, password: str) -> str:
    """`url` with `password` as its userinfo password, percent-encoded, so that any password
    (``/ # ? % @ :`` included) survives the URL parsers of redis-py, kombu and Celery. A
    password already in `url` is replaced; a username is kept. Raises `ConfigError` for a
    URL `checked_url` refuses."""
    scheme, _, remainder = checked_url(url).partition("://")
    netloc = urllib.parse.urlsplit(url).netloc  # what precedes the first / ? or #
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    # Rebuilt by hand: urlunsplit would turn "unix:///path" into "unix:/path".
    return f"{scheme}://{user}:{urllib.parse.quote(password, safe='')}@{hostport}{remainder[len(netloc) :]}"


def redis_client(
    url: str,
    *,
    connect_timeout_s: float = 5.0,
    socket_timeout_s: float = 30.0,
    health_check_interval_s: float = 30.0,
    retries: int = 3,
    decode_responses: bool = True,
) -> redis.Redis:
    """A client for `url` (``redis://``, ``rediss://``, ``unix://``, or ``redis+sentinel://``:
    the current primary of a Sentinel group, followed across failovers, `shared.redis_sentinel`).

    Connects lazily (no I/O here). `socket_timeout_s` bounds every command and must exceed
    the longest ``BLOCK`` a caller uses. Raises `ConfigError` for a malformed URL.
    """
    retry = _RetryUnlessRefused(
        ExponentialWithJitterBackoff(base=_BACKOFF_BASE_S, cap=_BACKOFF_CAP_S),
        retries,
        supported_errors=(redis.ConnectionError, redis.TimeoutError),
    )
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval_s,
        "retry": retry,
        "decode_responses": decode_responses,
        # RESP2: the same reply shapes on every redis-py we allow and every server.
        "protocol": 2,
    }
    try:
        if is_sentinel_url(url):
            return sentinel_client(parse_sentinel_url(checked_url(url)), **options)
        return redis.Redis.from_url(checked_url(url), **options)
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {redact_url(url)}: {exc}") from exc


def resolve_redis_url(settings: Settings) -> str:
    """``OMNIBIND_REDIS_URL`` (with ``OMNIBIND_REDIS__PASSWORD`` applied, see `with_password`)
    if set, else the URL of the embedded server of `settings`. Workers, producers and
    Celery's broker and result backend all connect with this URL.

    Raises `ConfigError` when the embedded server is configured with port 0 (any free
    port), since its URL is then only known to the process that started it, and when
    ``OMNIBIND_REDIS__PASSWORD`` is set without a URL to apply it to.
    """
    password = settings.redis.password
    sentinel_password = settings.redis.sentinel_password
    if settings.redis_url is not None:
        url = checked_url(settings.redis_url.get_secret_value())
        if sentinel_password is not None and is_sentinel_url(url):
            url = with_sentinel_password(url, sentinel_password.get_secret_value())
        return with_password(url, password.get_secret_value()) if password is not None else url
    if password is not None:
        raise ConfigError(
            "OMNIBIND_REDIS__PASSWORD is the password of OMNIBIND_REDIS_URL, which is unset; "
            "the embedded server's is OMNIBIND_REDIS__EMBEDDED_PASSWORD"
        )
    if settings.redis.embedded_port == 0:
        raise ConfigError(
            "OMNIBIND_REDIS__EMBEDDED_PORT=0 has no fixed URL; set OMNIBIND_REDIS_URL or a fixed embedded port"
        )
    embedded_password = settings.redis.embedded_password
    return build_url(
        "127.0.0.1",
        settings.redis.embedded_port,
        password=embedded_password.get_secret_value() if embedded_password else None,
    )


def redis_client_from_settings(settings: Settings, url: str | None = None) -> redis.Redis:
    """`redis_client` for `url` (default: `resolve_redis_url(settings)`) with the timeouts of `settings`."""
    opts = settings.redis
    return redis_client(
        url or resolve_redis_url(settings),
        connect_timeout_s=opts.connect_timeout_s,
        socket_timeout_s=opts.socket_timeout_s,
        health_check_interval_s=opts.health_check_interval_s,
        retries=opts.retries,
    )


@contextlib.contextmanager
def translate_redis_errors(doing: str) -> Iterator[None]:
    """Re-raise Redis failures inside the block as omnibind errors.

    Authentication failures become `ConfigError` (retrying cannot fix a wrong password);
    connection loss, timeouts and every refusal `is_refusal` knows (loading, read-only
    replicas, OOM, MISCONF after a failed save or AOF write, NOREPLICAS..., also from inside a
    Lua script or a pipeline) become `RedisUnavailable`. Anything else (a script bug, a wrong
    key type) propagates as is.
    `doing` names the operation for the message ("reading upload status").
    """
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise ConfigError(f"Redis refused our credentials while {doing}: {exc}") from exc
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.OutOfMemoryError,
    ) as exc:
        # A refusal's message says what an operator can do about it (shared.redis_refusals).
        advice = f" ({operator_advice(exc)})" if isinstance(exc, redis.ResponseError) else ""
        raise RedisUnavailable(f"Redis unavailable while {doing}: {exc}{advice}") from exc
    except redis.ResponseError as exc:
        if is_refusal(exc):
            raise RedisUnavailable(f"Redis refused a write while {doing}: {exc} ({operator_advice(exc)})") from exc
        raise
