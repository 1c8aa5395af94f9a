"""What the Weaviate adapter makes of the client's exceptions, the server's per-object
rejections and the server's version.

- **Rejections** are classified by the server's own words (Weaviate v1.35 source, checked
  against a live server): ``invalid <type> property '<name>' on class '<class>': ...`` rejects
  the object itself → `PermanentError` (reason ``vector_store_rejected``); a vector of another
  dimension, a vector name or tenant the collection does not have → `ConfigError`; anything
  else ("store is read-only due to: disk usage too high", "not enough memory", "context
  deadline exceeded", "leader not found"...) → `VectorStoreUnavailable`, retried.
- **Versions**: weaviate-client v4 talks to Weaviate 1.x from 1.27.0 on (the client refuses
  older servers itself); anything else is a `ConfigError` naming the supported versions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc
import httpx
from weaviate.exceptions import (
    AuthenticationFailedError,
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateInsertManyAllFailedError,
    WeaviateInvalidInputError,
    WeaviateUnsupportedFeatureError,
)

from shared.errors import ConfigError, OmnibindError, PermanentError, VectorStoreUnavailable

if TYPE_CHECKING:
    from weaviate.collections.classes.batch import BatchObjectReturn

# What the client lets escape: its own errors and, rarely, raw transport errors.
CLIENT_ERRORS = (WeaviateBaseError, httpx.HTTPError, grpc.RpcError)

MIN_SERVER_VERSION = (1, 27, 0)  # weaviate-client v4 refuses older servers
SERVER_MAJOR = 1
SUPPORTED_VERSIONS = "Weaviate 1.27.0 or a newer 1.x"

COLLECTION_HINT = "use another collection (OMNIBIND_VECTORS__COLLECTION)"
# Weaviate phrases a dimension mismatch in several ways across versions.
_DIMENSION_MISMATCH = re.compile(
    r"vector lengths? don.?t match|has a vector with length|vector length|vector dimensions do not match", re.I
)
# The object does not fit the collection (which the schema check at open should have caught).
_SCHEMA_MISMATCH = re.compile(
    r"does not have configuration for vector|has multi-tenancy enabled|no such prop with name", re.I
)
# The server rejects the object itself (usecases/objects/validation: one per data type).
_OBJECT_REJECTED = re.compile(r"\binvalid [a-z]+(?: [a-z]+)*(?:\[\])? property '", re.I)
# The collection is gone: "could not find class X in schema" (gRPC), "class "X" not found in schema" (REST).
CLASS_MISSING = re.compile(r"could not find class \S+ in schema|class \S+ not found in schema", re.I)
_CLIENT_VERSION_REFUSAL = re.compile(r"Weaviate version (\S+) is not supported")
_ALL_FAILED_PREFIX = "Here is the set of all errors:"
# gRPC status codes (grpc.StatusCode values) that mean "try again later".
_TRANSIENT_GRPC_CODES = frozenset({4, 8, 10, 14})  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_ERRORS_SHOWN = 10


def check_server_version(version: str, where: str) -> None:
    """Raise `ConfigError` unless `version` (as ``/v1/meta`` reports it) is supported."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    parsed = tuple(int(part) for part in match.groups()) if match else None
    if parsed is not None and parsed >= MIN_SERVER_VERSION and parsed[0] == SERVER_MAJOR:
        return
    raise version_error(version, where)


def version_error(version: str, where: str) -> ConfigError:
    from weaviate import __version__ as client_version

    return ConfigError(
        f"Weaviate at {where} is version {version!r}; omnibind (weaviate-client {client_version}) supports "
        f"{SUPPORTED_VERSIONS}: upgrade Weaviate or point OMNIBIND_VECTORS__URL at a supported server"
    )


def translate_error(exc: Exception, action: str) -> OmnibindError:
    """The omnibind error for a weaviate-client (or transport) exception raised during `action`."""
    text = f"Weaviate {action} failed: {exc}"
    refusal = _CLIENT_VERSION_REFUSAL.search(str(exc))
    if refusal is not None:
        return version_error(refusal.group(1), action)
    if isinstance(exc, WeaviateUnsupportedFeatureError):
        return ConfigError(f"{text}; omnibind needs {SUPPORTED_VERSIONS}")
    if isinstance(exc, AuthenticationFailedError | InsufficientPermissionsError):
        return ConfigError(f"{text} (check OMNIBIND_VECTORS__API_KEY)")
    if isinstance(exc, WeaviateInsertManyAllFailedError):
        return rejection_error(text, all_failed_messages(exc))
    if _DIMENSION_MISMATCH.search(str(exc)):
        return ConfigError(f"{text}; vectors of different models cannot share a collection: {COLLECTION_HINT}")
    if isinstance(exc, UnexpectedStatusCodeError):
        return _status_error(exc.status_code, text)
    if isinstance(exc, WeaviateInvalidInputError):
        return PermanentError(text, reason="invalid_record")
    # Connection refused, timeouts, closed client, retries exhausted, gRPC query/batch
    # errors: all "the store is not answering right now".
    return VectorStoreUnavailable(text)


def _status_error(code: int, text: str) -> OmnibindError:
    if code in (401, 403):
        return ConfigError(f"{text} (check OMNIBIND_VECTORS__API_KEY)")
    if code >= 500 or code in (408, 429) or code in _TRANSIENT_GRPC_CODES:
        return VectorStoreUnavailable(text)
    if 400 <= code < 500:
        # Weaviate refused the request itself: the collection does not have the schema
        # omnibind expects (someone else created it) or the server is too old.
        return ConfigError(text)
    return VectorStoreUnavailable(text)


def all_failed_messages(exc: WeaviateInsertManyAllFailedError) -> list[str]:
    """The server's messages inside the client's "every object failed" error (one a line)."""
    text = str(exc)
    _, found, messages = text.partition(_ALL_FAILED_PREFIX)
    return [line.strip() for line in messages.splitlines() if line.strip()] if found else [text]


def rejection_error(text: str, messages: Iterable[str]) -> OmnibindError:
    """The error for a write the server answered with per-object `messages` (see the module
    docstring): one that needs another collection wins, then any that retrying may cure."""
    messages = list(messages)
    if any(_DIMENSION_MISMATCH.search(message) for message in messages):
        return ConfigError(f"{text}; vectors of different models cannot share a collection: {COLLECTION_HINT}")
    if any(_SCHEMA_MISMATCH.search(message) for message in messages):
        return ConfigError(f"{text}; the collection does not have omnibind's schema: {COLLECTION_HINT}")
    if messages and all(_OBJECT_REJECTED.search(message) for message in messages):
        return PermanentError(text, reason="vector_store_rejected")
    return VectorStoreUnavailable(text)


def batch_failures(result: BatchObjectReturn, upload_ids: Sequence[str]) -> dict[str, str]:
    """Failed upload id -> Weaviate's message, from a batch result (indices are batch positions)."""
    return {upload_ids[index]: error.message for index, error in sorted(result.errors.items())}


def failures_error(failures: Mapping[str, str], total: int, collection: str) -> OmnibindError:
    """The error for a batch of `total` objects of which `failures` (upload id -> message) failed."""
    shown = "; ".join(f"{upload_id}: {message}" for upload_id, message in list(failures.items())[:_ERRORS_SHOWN])
    more = f" (and {len(failures) - _ERRORS_SHOWN} more)" if len(failures) > _ERRORS_SHOWN else ""
    text = f"Weaviate rejected {len(failures)} of {total} objects written to {collection}: {shown}{more}"
    return rejection_error(text, failures.values())


def all_failed_error(
    exc: WeaviateInsertManyAllFailedError, upload_ids: Sequence[str], collection: str
) -> OmnibindError:
    """The error for a batch the server refused object by object, every one of them (the client
    then raises instead of returning the per-object errors, and says which messages, not whose)."""
    shown = ", ".join(upload_ids[:_ERRORS_SHOWN]) + (" ..." if len(upload_ids) > _ERRORS_SHOWN else "")
    messages = all_failed_messages(exc)
    text = f"Weaviate rejected all {len(upload_ids)} objects written to {collection} ({shown}): " + " | ".join(messages)
    return rejection_error(text, messages)
