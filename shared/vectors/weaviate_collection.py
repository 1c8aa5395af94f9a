"""The life of omnibind's Weaviate collection on the server: created when missing, an existing
one checked against `weaviate_schema` (`ConfigError` naming what differs) and given the
properties it lacks, and the named vectors of record parts (``part_<name>``) added as records
bring them.

Two workers doing any of this at once is fine: the loser of a create sees "already exists",
the loser of an added property or vector sees it there, and each checks and uses the
winner's. Tenants are a filterable property, not Weaviate's native multi-tenancy: a
collection with multi-tenancy enabled is refused by the schema check
(`weaviate_schema.schema_differences`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from weaviate.exceptions import UnexpectedStatusCodeError

from shared.errors import ConfigError
from shared.vectors.weaviate_errors import CLIENT_ERRORS, COLLECTION_HINT, translate_error
from shared.vectors.weaviate_schema import (
    PART_PREFIX,
    collection_config,
    missing_properties,
    part_vectors,
    schema_differences,
    vector_config,
)

if TYPE_CHECKING:
    from weaviate import WeaviateClient
    from weaviate.collections.classes.config import CollectionConfig

log = logging.getLogger(__name__)


class WeaviateCollection:
    """One collection's schema as this process knows it: whether it has been checked since
    the client connected (`ready`), and which part vectors it has (`parts`).

    `client` returns this process's connected client (the store opens it lazily). Raises
    `VectorStoreUnavailable` when Weaviate cannot be reached and `ConfigError` when the
    collection cannot be used.
    """

    def __init__(
        self, name: str, client: Callable[[], WeaviateClient], *, describe: str, parts_refresh_s: float = 5.0
    ) -> None:
        self.name = name
        self._client = client
        self._describe = describe
        self.ready = False  # the schema was checked since the client connected
        self.parts: frozenset[str] = frozenset()  # part vectors the collection is known to have
        self._parts_read_at = float("-inf")  # monotonic time `parts` was read from the server
        # The list of part vectors is read again when older than this, so a part another
        # process added is searched within seconds; reading it for every search cost about
        # as much as the search itself.
        self.parts_refresh_s = parts_refresh_s

    def prepare(self, *, create: bool, on_create: Callable[[], None]) -> bool:
        """Whether the collection exists, its schema checked, created first if `create`
        (calling `on_create` just before). Checked once while `ready`, every time if `create`."""
        if not create and self.ready:
            return True
        config = self.read_config()
        if config is None:
            self.ready = False
            if not create:
                return False
            on_create()
            config = self._create()
        if config is not None:
            self._check_schema(config)
            self.parts = part_vectors(config)
        else:
            self.parts = frozenset()
        self._parts_read_at = time.monotonic()
        self.ready = True
        return True

    def read_config(self) -> CollectionConfig | None:
        """The collection's configuration as the server has it; None if there is no such collection."""
        try:
            return self._client().collections.export_config(self.name)
        except UnexpectedStatusCodeError as exc:
            if exc.status_code == 404:
                return None
            raise translate_error(exc, f"read the schema of {self.name}") from exc
        except CLIENT_ERRORS as exc:
            raise translate_error(exc, f"read the schema of {self.name}") from exc

    def current_parts(self) -> frozenset[str]:
        """The part vectors the collection has now (read again: another process may have added one)."""
        config = self.read_config()
        self.parts = frozenset() if config is None else part_vectors(config)
        self._parts_read_at = time.monotonic()
        return self.parts

    def recent_parts(self) -> frozenset[str]:
        """The part vectors as read at most `parts_refresh_s` ago."""
        if time.monotonic() - self._parts_read_at >= self.parts_refresh_s:
            return self.current_parts()
        return self.parts

    def ensure_part_vectors(self, wanted: set[str]) -> None:
        """Add the named vectors of the parts in `wanted` that the collection lacks."""
        if wanted <= self.parts:
            return
        collection = self._client().collections.use(self.name)
        for name in sorted(wanted - self.current_parts()):
            try:
                collection.config.add_vector(vector_config=vector_config(PART_PREFIX + name))
            except CLIENT_ERRORS as exc:
                # Another worker may have added it first; anything else is a real failure
                # (servers before 1.31 cannot add a named vector to a collection at all).
                if name not in self.current_parts():
                    raise translate_error(exc, f"add vector {PART_PREFIX + name} to {self.name}") from exc
                continue
            log.info("added named vector %s to Weaviate collection %s", PART_PREFIX + name, self.name)
        self.current_parts()

    def _create(self) -> CollectionConfig | None:
        """Create the collection; returns the configuration to check when another worker won the
        race and created it first, None when this one created it (its schema is ours)."""
        try:
            self._client().collections.create(**collection_config(self.name))
        except UnexpectedStatusCodeError as exc:
            # Another worker created it between our check and our create: use theirs, if it fits.
            if exc.status_code == 422 and "already exists" in str(exc):
                log.info("collection %s was created concurrently by another worker", self.name)
                return self.read_config()
            raise translate_error(exc, f"create collection {self.name}") from exc
        except CLIENT_ERRORS as exc:
            raise translate_error(exc, f"create collection {self.name}") from exc
        log.info("created Weaviate collection %s (self-provided vectors, HNSW, cosine)", self.name)
        return None

    def _check_schema(self, config: CollectionConfig) -> None:
        """Refuse a collection omnibind cannot use (`ConfigError`); add properties it lacks."""
        differences = schema_differences(config)
        if differences:
            raise ConfigError(
                f"{self._describe} does not have omnibind's schema: {'; '.join(differences)}. Another program "
                f"(or Weaviate's auto-schema) created it: {COLLECTION_HINT}, or delete this one"
            )
        collection = self._client().collections.use(self.name)
        raced = False
        for prop in missing_properties(config):
            try:
                collection.config.add_property(prop)
            except CLIENT_ERRORS as exc:
                # Another worker may have added it first: the client then says "already exists",
                # the server "conflict for property ...: already in use".
                now = self.read_config()
                if now is None or prop.name in {missing.name for missing in missing_properties(now)}:
                    raise translate_error(exc, f"add property {prop.name} to {self.name}") from exc
                raced = True
                continue
            log.info("added property %s to Weaviate collection %s", prop.name, self.name)
        if raced:  # check what the other worker added
            now = self.read_config()
            if now is not None:
                self._check_schema(now)
