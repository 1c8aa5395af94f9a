"""Tenants in Weaviate, both ways, on the live server `make servers` builds (issue 14, item 3):

(a) **filter** — what omnibind ships: one collection, the `tenant` property, every search
    filtered by it (`WeaviateVectorStore`, so the numbers include the adapter's own work);
    also the same query sent straight through the client (`filter_raw`), to separate what
    the adapter adds from what the filter costs;
(b) **native** — Weaviate's multi-tenancy: a collection with `multi_tenancy_config`
    (auto tenant creation and activation on), one shard per tenant, every call
    `collection.with_tenant(t)`, same properties, same named vector, same HNSW/cosine.

    PYTHONPATH=$PWD .venv/bin/python bench/weaviate_tenancy.py            # 20,000 rows, ~5 min
    PYTHONPATH=$PWD .venv/bin/python bench/weaviate_tenancy.py --rows 5000 --queries 30   # smoke

Two tenant layouts of the same clustered 1024-d unit vectors: `even10` (10 tenants, rows
dealt round-robin) and `skewed100` (100 tenants: one holds `--big-share` of the rows, 99
share the rest). Each design of each layout runs on a fresh server process (same binary,
same settings, fresh data dir) so that RSS, disk and open files belong to that design.
Loading is interleaved across tenants like real traffic, in batches of `--load-batch`;
native writes group each batch by tenant (`with_tenant(t).data.insert_many`).

Measured per layout and design: bulk load rows/s; index-worker-sized writes (8 records of
mixed tenants) p50/p95; search p50/p95 (k = 10) and recall@10 against exact numpy search
over the same tenant, for a small tenant and the big one; server RSS, data dir size and file
count after load (and the data dir after a clean stop); the cost of a write that brings a
new tenant (native: created on first write) against a write to an existing one. Native only:
what a query without a tenant, for an unknown tenant, for another tenant's object, or with a
tenant name omnibind allows but Weaviate does not (``acme.eu``) does; deactivating a
tenant and the first query after it (auto activation), and the same with auto activation
off. Offloading needs the offload-s3 module and is not measured.

Results: bench/results/weaviate_tenancy_<rows>_<date>.{json,md}. A benchmark, not a test:
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import host_info
from bench.report import write_report
from shared.events import Modality
from shared.vectors.properties import PROPERTY_NAMES
from shared.vectors.records import ALL_TENANTS, SearchFilters, VectorRecord, tenants
from shared.vectors.weaviate import to_data_object
from shared.vectors.weaviate_schema import VECTOR_NAME, collection_config

RESULTS = Path(__file__).resolve().parent / "results"
CLUSTERS = 256
K = 10
SMALL_BATCH = 8


# -- data ------------------------------------------------------------------------------------


def clustered(rows: int, dim: int, seed: int, centres_seed: int) -> np.ndarray:
    """`rows` unit vectors around `CLUSTERS` centres drawn from `centres_seed` (float32)."""
    centres = np.random.default_rng(centres_seed).standard_normal((CLUSTERS, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    block = centres[rng.integers(0, CLUSTERS, rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def layout_tenants(layout: str, rows: int, big_share: float) -> np.ndarray:
    """The tenant of each row (names ``t0``...), interleaved as live traffic would be."""
    if layout == "even10":
        return np.array([f"t{i % 10}" for i in range(rows)])
    rng = np.random.default_rng(1)
    # skewed100: t0 holds big_share of the rows; t1..t99 share the rest evenly.
    big = rng.random(rows) < big_share
    small = np.array([f"t{1 + i % 99}" for i in range(rows)])
    return np.where(big, "t0", small)


def record(i: int, vector: np.ndarray, tenant: str, prefix: str = "r") -> VectorRecord:
    return VectorRecord(upload_id=f"{prefix}{i}", vector=vector, modality=Modality.IMAGE, tenant=tenant, source="bench")


def exact_top_k(vectors: np.ndarray, mask: np.ndarray, query: np.ndarray) -> set[str]:
    scores = np.where(mask, vectors @ query, -np.inf)
    top = np.argpartition(-scores, K)[:K]
    return {f"r{i}" for i in top if np.isfinite(scores[i])}


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(values, 50), "p95_ms": pct(values, 95), "max_ms": round(max(values), 2), "n": len(values)}


# -- the server ------------------------------------------------------------------------------


class Server:
    """A fresh `WeaviateServer` in `workdir`, a raw v4 client on it, and its process facts."""

    def __init__(self, workdir: Path) -> None:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        from tests.support.weaviate_server import WeaviateServer

        self.workdir = workdir
        self.server = WeaviateServer(workdir).start()
        address = self.server.address
        self.address = address
        self.client = weaviate.connect_to_custom(
            http_host="127.0.0.1",
            http_port=self.server.port,
            http_secure=False,
            grpc_host="127.0.0.1",
            grpc_port=address.grpc_port,
            grpc_secure=False,
            auth_credentials=Auth.api_key(address.api_key) if address.api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=5, query=60, insert=120)),
            skip_init_checks=True,
        )

    def adapter(self, collection: str, dim: int) -> Any:
        from pydantic import SecretStr

        from shared.vectors.weaviate import WeaviateVectorStore, parse_endpoint

        return WeaviateVectorStore(
            parse_endpoint(self.address.url, grpc_port=self.address.grpc_port),
            api_key=SecretStr(self.address.api_key) if self.address.api_key else None,
            collection=collection,
            dimension=dim,
        )

    def facts(self) -> dict[str, Any]:
        """RSS, open files and the data dir as they are now."""
        pid = self.server.process.pid
        assert pid is not None
        process = psutil.Process(pid)
        return {"rss_mb": round(process.memory_info().rss / 2**20), "open_fds": process.num_fds(), **self.disk()}

    def disk(self) -> dict[str, Any]:
        files = [p for p in (self.workdir / "data").rglob("*") if p.is_file()]
        return {"data_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1), "data_files": len(files)}

    def close(self) -> dict[str, Any]:
        """Stop cleanly (memtables flushed) and return the data dir as it is then."""
        self.client.close()
        self.server.stop()
        return self.disk()


# -- the two designs -------------------------------------------------------------------------


class FilterDesign:
    """(a) one collection, `tenant` property, through `WeaviateVectorStore`."""

    name = "filter"

    def __init__(self, server: Server, dim: int) -> None:
        self.store = server.adapter("TenancyFilter", dim)
        self.raw = server.client.collections.use("TenancyFilter")

    def write(self, batch: list[VectorRecord]) -> int:
        self.store.upsert(batch)
        return 1  # one upsert call (the adapter splits it into insert_many calls of 256)

    def search(self, vector: np.ndarray, tenant: str) -> list[str]:
        return [
            hit.record.upload_id for hit in self.store.search(vector, k=K, filters=SearchFilters(scope=tenants(tenant)))
        ]

    def search_raw(self, vector: np.ndarray, tenant: str) -> list[str]:
        from weaviate.classes.query import Filter, MetadataQuery

        response = self.raw.query.near_vector(
            near_vector=vector.tolist(),
            limit=K,
            target_vector=VECTOR_NAME,
            filters=Filter.by_property("tenant").equal(tenant),
            include_vector=True,
            return_properties=list(PROPERTY_NAMES),
            return_metadata=MetadataQuery(distance=True),
        )
        return [str(obj.properties["upload_id"]) for obj in response.objects]

    def count(self) -> int:
        return int(self.store.count(SearchFilters(scope=ALL_TENANTS)))

    def purge(self, tenant: str) -> int:
        """Delete every object of `tenant` (batch delete by filter, repeated: the server deletes
        at most QUERY_MAXIMUM_RESULTS objects per call); returns the calls made."""
        from weaviate.classes.query import Filter

        calls = 0
        while True:
            calls += 1
            result = self.raw.data.delete_many(where=Filter.by_property("tenant").equal(tenant))
            if result.failed:
                raise RuntimeError(f"purge of {tenant}: {result.failed} deletes failed")
            if not result.matches:
                return calls

    def search_all(self, vector: np.ndarray) -> list[str]:
        """An operator search over every tenant: one query, no tenant condition."""
        return [
            hit.record.upload_id for hit in self.store.search(vector, k=K, filters=SearchFilters(scope=ALL_TENANTS))
        ]

    def close(self) -> None:
        self.store.close()


class NativeDesign:
    """(b) Weaviate multi-tenancy: a shard per tenant, every call `with_tenant(t)`."""

    name = "native"

    def __init__(self, server: Server) -> None:
        from weaviate.classes.config import Configure

        self.client = server.client
        self.client.collections.create(
            **collection_config("TenancyNative"),
            multi_tenancy_config=Configure.multi_tenancy(
                enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
            ),
        )
        self.collection = self.client.collections.use("TenancyNative")

    def write(self, batch: list[VectorRecord]) -> int:
        """One insert_many per tenant in `batch` (a request carries one tenant); returns the calls."""
        by_tenant: dict[str, list[VectorRecord]] = {}
        for rec in batch:
            assert rec.tenant is not None
            by_tenant.setdefault(rec.tenant, []).append(rec)
        for tenant, recs in by_tenant.items():
            for start in range(0, len(recs), 256):
                result = self.collection.with_tenant(tenant).data.insert_many(
                    [to_data_object(rec) for rec in recs[start : start + 256]]
                )
                if result.errors:
                    raise RuntimeError(f"native write to {tenant} failed: {next(iter(result.errors.values()))}")
        return len(by_tenant)

    def write_one_request(self, batch: list[VectorRecord]) -> int:
        """`batch` of mixed tenants in one gRPC batch request (the client's batcher carries a tenant
        per object); the alternative to one insert_many per tenant."""
        with self.client.batch.fixed_size(batch_size=len(batch), concurrent_requests=1) as writer:
            for rec in batch:
                obj = to_data_object(rec)
                writer.add_object(
                    collection="TenancyNative",
                    properties=obj.properties,
                    uuid=obj.uuid,
                    vector=obj.vector,
                    tenant=rec.tenant,
                )
        failed = self.client.batch.failed_objects
        if failed:
            raise RuntimeError(f"native batch write failed: {failed[0].message}")
        return 1

    def search(self, vector: np.ndarray, tenant: str) -> list[str]:
        from weaviate.classes.query import MetadataQuery

        response = self.collection.with_tenant(tenant).query.near_vector(
            near_vector=vector.tolist(),
            limit=K,
            target_vector=VECTOR_NAME,
            include_vector=True,
            return_properties=list(PROPERTY_NAMES),
            return_metadata=MetadataQuery(distance=True),
        )
        return [str(obj.properties["upload_id"]) for obj in response.objects]

    def search_all(self, vector: np.ndarray) -> list[str]:
        """An operator search over every tenant: one query per tenant, merged (the server has no
        cross-tenant query)."""
        from weaviate.classes.query import MetadataQuery

        hits: list[tuple[float, str]] = []
        for tenant in self.collection.tenants.get():
            response = self.collection.with_tenant(tenant).query.near_vector(
                near_vector=vector.tolist(),
                limit=K,
                target_vector=VECTOR_NAME,
                return_properties=["upload_id"],
                return_metadata=MetadataQuery(distance=True),
            )
            hits += [(float(o.metadata.distance or 0.0), str(o.properties["upload_id"])) for o in response.objects]
        return [upload_id for _, upload_id in sorted(hits)[:K]]

    def purge(self, tenant: str) -> int:
        """Drop `tenant`'s shard; returns the calls made."""
        self.collection.tenants.remove(tenant)
        return 1

    def count(self) -> int:
        return sum(
            int(self.collection.with_tenant(name).aggregate.over_all(total_count=True).total_count or 0)
            for name in self.collection.tenants.get()
        )

    def close(self) -> None:
        pass


# -- measurements ----------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = call()
    return (time.perf_counter() - t0) * 1000, out


def load(design: FilterDesign | NativeDesign, vectors: np.ndarray, owners: np.ndarray, batch: int) -> dict[str, Any]:
    rows = len(vectors)
    calls = 0
    started = time.perf_counter()
    for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        calls += design.write([record(i, vectors[i], str(owners[i])) for i in range(start, stop)])
    seconds = time.perf_counter() - started
    held = design.count()
    assert held == rows, f"{design.name} holds {held} of {rows}"
    return {"load_s": round(seconds, 1), "load_rows_per_s": round(rows / seconds), "write_calls": calls}


def small_writes(
    write: Callable[[list[VectorRecord]], int], vectors: np.ndarray, owners: np.ndarray, n: int
) -> dict[str, Any]:
    """The index worker's case: overwrites of SMALL_BATCH records of mixed tenants."""
    rng = np.random.default_rng(7)
    times = []
    for _ in range(n):
        picks = rng.choice(len(vectors), SMALL_BATCH, replace=False)
        batch = [record(int(i), vectors[i], str(owners[i])) for i in picks]
        times.append(timed(partial(write, batch))[0])
    return {"records_per_call": SMALL_BATCH, **summary(times)}


def searches(
    search: Callable[[np.ndarray, str], list[str]],
    vectors: np.ndarray,
    owners: np.ndarray,
    queries: np.ndarray,
    tenant: str,
) -> dict[str, Any]:
    mask = owners == tenant
    latencies, recalls = [], []
    for query in queries:
        ms, found = timed(partial(search, query, tenant))
        latencies.append(ms)
        truth = exact_top_k(vectors, mask, query)
        recalls.append(len(set(found) & truth) / len(truth))
        leaked = [upload_id for upload_id in found if owners[int(upload_id[1:])] != tenant]
        assert not leaked, f"search for {tenant} returned other tenants' records {leaked}"
    return {
        "tenant": tenant,
        "rows": int(mask.sum()),
        **summary(latencies),
        "recall_at_10": round(statistics.fmean(recalls), 4),
    }


def all_tenants(design: FilterDesign | NativeDesign, queries: np.ndarray) -> dict[str, Any]:
    """Operator paths (scope ALL_TENANTS): a count of everything and a search over every tenant."""
    counts = [timed(design.count)[0] for _ in range(5)]
    return {
        "count_ms": summary(counts),
        "search_ms": summary([timed(partial(design.search_all, q))[0] for q in queries]),
    }


def purges(design: FilterDesign | NativeDesign, owners: np.ndarray, small: str, big: str) -> dict[str, Any]:
    """Deleting everything of a tenant (issue 14's purge), small then big; the rest must stay."""
    out: dict[str, Any] = {}
    before = design.count()
    gone = 0
    for label, tenant in (("small_tenant", small), ("big_tenant", big)):
        ms, calls = timed(partial(design.purge, tenant))
        out[label] = {"tenant": tenant, "rows": int((owners == tenant).sum()), "ms": round(ms, 1), "calls": calls}
        gone += int((owners == tenant).sum())
    out["rows_left_as_expected"] = design.count() == before - gone
    return out


def new_tenant_writes(design: FilterDesign | NativeDesign, vectors: np.ndarray, n: int) -> dict[str, Any]:
    """One-record writes to `n` tenants that do not exist yet, against as many to an existing one."""
    first, existing = [], []
    for j in range(n):
        first.append(timed(partial(design.write, [record(j, vectors[j], f"new{j}", prefix="n")]))[0])
        existing.append(timed(partial(design.write, [record(j, vectors[j], "t1", prefix="e")]))[0])
    return {"first_write_to_new_tenant": summary(first), "write_to_existing_tenant": summary(existing)}


def outcome(call: Callable[[], Any]) -> str:
    """What `call` did: its result summarised, or the error it raised (first line, trimmed)."""
    try:
        out = call()
    except Exception as exc:  # we record whatever the server answers
        text = " ".join(str(exc).split())
        return f"error {type(exc).__name__}: {text[:300]}"
    if hasattr(out, "objects"):
        return f"ok, {len(out.objects)} objects: {[o.properties.get('tenant') for o in out.objects][:5]}"
    return f"ok: {str(out)[:200]}"


def native_probes(
    design: NativeDesign, vectors: np.ndarray, owners: np.ndarray, small: str, big: str
) -> dict[str, Any]:
    """Isolation and lifecycle of native tenants, as the server answers."""
    from weaviate.classes.config import Reconfigure
    from weaviate.classes.query import Filter

    collection = design.collection
    query = vectors[0].tolist()
    other_uuid = record(int(np.flatnonzero(owners == big)[0]), vectors[0], big).uuid
    probes: dict[str, Any] = {
        "query_without_tenant": outcome(lambda: collection.query.near_vector(near_vector=query, limit=3)),
        "query_unknown_tenant": outcome(
            lambda: collection.with_tenant("nosuchtenant").query.near_vector(near_vector=query, limit=3)
        ),
        "unknown_tenant_created_by_query": collection.tenants.exists("nosuchtenant"),
        "fetch_other_tenants_object_by_id": outcome(
            lambda: collection.with_tenant(small).query.fetch_object_by_id(other_uuid)
        ),
        "filter_on_other_tenant_inside_tenant": outcome(
            lambda: collection.with_tenant(small).query.near_vector(
                near_vector=query, limit=3, filters=Filter.by_property("tenant").equal(big)
            )
        ),
        "write_tenant_name_with_dot": outcome(lambda: design.write([record(0, vectors[0], "acme.eu", prefix="d")])),
        "tenants_after_load": len(collection.tenants.get()),
    }
    # Deactivate, then query with auto activation on: the first query loads the shard again.
    for label, tenant in (("small", small), ("big", big)):
        off_ms, _ = timed(partial(collection.tenants.deactivate, tenant))
        status = collection.tenants.get_by_name(tenant)
        first_ms, _ = timed(partial(design.search, vectors[1], tenant))
        second_ms, _ = timed(partial(design.search, vectors[2], tenant))
        after = collection.tenants.get_by_name(tenant)
        probes[f"deactivate_{label}"] = {
            "tenant": tenant,
            "deactivate_ms": round(off_ms, 1),
            "status_after_deactivate": str(getattr(status, "activity_status", status)),
            "first_query_after_ms": round(first_ms, 1),
            "second_query_ms": round(second_ms, 1),
            "status_after_query": str(getattr(after, "activity_status", after)),
        }
    # Auto activation off: what a query and a write to an inactive tenant answer.
    collection.config.update(multi_tenancy_config=Reconfigure.multi_tenancy(auto_tenant_activation=False))
    collection.tenants.deactivate(small)
    probes["inactive_no_auto_activation"] = {
        "query": outcome(lambda: design.search(vectors[1], small)),
        "write": outcome(lambda: design.write([record(1, vectors[1], small, prefix="i")])),
    }
    on_ms, _ = timed(lambda: collection.tenants.activate(small))
    probes["inactive_no_auto_activation"]["explicit_activate_ms"] = round(on_ms, 1)
    collection.config.update(multi_tenancy_config=Reconfigure.multi_tenancy(auto_tenant_activation=True))
    return probes


def run_design(
    kind: str, layout: str, vectors: np.ndarray, owners: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    small, big = ("t3", "t0") if layout == "even10" else ("t17", "t0")
    with tempfile.TemporaryDirectory(prefix=f"omnibind-wvt-{kind}-") as tmp:
        server = Server(Path(tmp))
        result: dict[str, Any] = {}
        try:
            idle = server.facts()
            design: FilterDesign | NativeDesign = (
                FilterDesign(server, args.dim) if kind == "filter" else NativeDesign(server)
            )
            print(f"{layout}/{kind}: loading {len(vectors):,} rows", flush=True)
            result.update(idle=idle, **load(design, vectors, owners, args.load_batch))
            time.sleep(2)  # let the server settle before reading its RSS
            result["after_load"] = server.facts()
            result["small_writes"] = small_writes(design.write, vectors, owners, args.small_writes)
            if isinstance(design, NativeDesign):
                result["small_writes_one_request"] = small_writes(
                    design.write_one_request, vectors, owners, args.small_writes
                )
            print(f"{layout}/{kind}: searching", flush=True)
            result["search"] = {
                label: searches(design.search, vectors, owners, queries, tenant)
                for label, tenant in (("small_tenant", small), ("big_tenant", big))
            }
            if isinstance(design, FilterDesign):
                result["search_raw_client"] = {
                    label: searches(design.search_raw, vectors, owners, queries, tenant)
                    for label, tenant in (("small_tenant", small), ("big_tenant", big))
                }
            result["all_tenants"] = all_tenants(design, queries[: args.queries // 5])
            result["new_tenants"] = new_tenant_writes(design, vectors, args.new_tenants)
            if isinstance(design, NativeDesign):
                result["probes"] = native_probes(design, vectors, owners, small, big)
            result["after_all"] = server.facts()
            result["purge"] = purges(design, owners, small, big)  # last: it changes what is stored
            design.close()
        finally:
            result["data_after_clean_stop"] = server.close()
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Tenants in Weaviate: property filter vs native multi-tenancy, {result['rows']:,} rows of {result['dim']}-d",
        "",
        f"- date: {result['date']}; machine: {result['machine']}",
        f"- load average at start {result['machine']['load_avg_at_start']}, at end {result['load_avg_at_end']} "
        "(other jobs share the 2 cores: compare within this run, not across runs)",
        f"- command: `{result['command']}`; Weaviate {result['server_version']}",
        f"- {result['queries']} queries per tenant, k = {K}; bulk load in batches of {result['load_batch']} "
        f"(interleaved tenants); small writes = {SMALL_BATCH} records of mixed tenants",
        "- filter = `WeaviateVectorStore` (what omnibind ships); filter raw = the same near_vector + tenant "
        "filter straight through the client; native = `with_tenant(t)` on a multi-tenancy collection",
        "",
    ]
    for layout, designs in result["layouts"].items():
        f, n = designs["filter"], designs["native"]
        lines += [
            f"## {layout}",
            "",
            "| | filter | native |",
            "|---|---|---|",
            f"| bulk load rows/s | {f['load_rows_per_s']:,} | {n['load_rows_per_s']:,} |",
            f"| write calls for the load | {f['write_calls']} | {n['write_calls']} (one per tenant per batch) |",
            f"| small write ms p50 / p95 | {f['small_writes']['p50_ms']} / {f['small_writes']['p95_ms']} "
            f"| {n['small_writes']['p50_ms']} / {n['small_writes']['p95_ms']} (one insert_many per tenant); "
            f"{n['small_writes_one_request']['p50_ms']} / {n['small_writes_one_request']['p95_ms']} "
            "(one batch request, tenant per object) |",
        ]
        for label in ("small_tenant", "big_tenant"):
            fs, fr, ns = f["search"][label], f["search_raw_client"][label], n["search"][label]
            lines.append(
                f"| search {label.replace('_', ' ')} ({fs['tenant']}, {fs['rows']:,} rows) ms p50 / p95, recall@10 "
                f"| {fs['p50_ms']} / {fs['p95_ms']}, {fs['recall_at_10']} (raw: {fr['p50_ms']} / {fr['p95_ms']}, "
                f"{fr['recall_at_10']}) | {ns['p50_ms']} / {ns['p95_ms']}, {ns['recall_at_10']} |"
            )
        for label, key in (("server RSS MB idle / after load", "rss_mb"), ("open fds idle / after load", "open_fds")):
            lines.append(
                f"| {label} | {f['idle'][key]} / {f['after_load'][key]} | {n['idle'][key]} / {n['after_load'][key]} |"
            )
        lines += [
            f"| data dir MB (files) after load | {f['after_load']['data_mb']} ({f['after_load']['data_files']}) "
            f"| {n['after_load']['data_mb']} ({n['after_load']['data_files']}) |",
            f"| data dir MB (files) after the purges below and a clean stop | {f['data_after_clean_stop']['data_mb']} "
            f"({f['data_after_clean_stop']['data_files']}) | {n['data_after_clean_stop']['data_mb']} "
            f"({n['data_after_clean_stop']['data_files']}) |",
        ]
        for label, key in (
            ("1-record write, new tenant ms p50 / p95", "first_write_to_new_tenant"),
            ("1-record write, existing tenant ms p50 / p95", "write_to_existing_tenant"),
        ):
            fw, nw = f["new_tenants"][key], n["new_tenants"][key]
            lines.append(f"| {label} | {fw['p50_ms']} / {fw['p95_ms']} | {nw['p50_ms']} / {nw['p95_ms']} |")
        fa, na = f["all_tenants"], n["all_tenants"]
        lines += [
            f"| operator count of all tenants ms p50 | {fa['count_ms']['p50_ms']} | {na['count_ms']['p50_ms']} "
            "(one aggregate per tenant) |",
            f"| operator search over all tenants ms p50 / p95 | {fa['search_ms']['p50_ms']} / "
            f"{fa['search_ms']['p95_ms']} | {na['search_ms']['p50_ms']} / {na['search_ms']['p95_ms']} "
            "(one query per tenant, merged) |",
        ]
        fp, np_ = f["purge"], n["purge"]
        for label in ("small_tenant", "big_tenant"):
            lines.append(
                f"| purge {label.replace('_', ' ')} ({fp[label]['rows']:,} rows) ms (calls) | {fp[label]['ms']} "
                f"({fp[label]['calls']} delete_many) | {np_[label]['ms']} (tenants.remove) |"
            )
        lines += ["", "Native only, as the server answered:", ""]
        for key, value in n["probes"].items():
            lines.append(f"- `{key}`: {value}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layouts", nargs="+", choices=["even10", "skewed100"], default=["even10", "skewed100"])
    parser.add_argument(
        "--big-share", type=float, default=0.5, help="share of the rows the big tenant holds (skewed100)"
    )
    parser.add_argument("--queries", type=int, default=100, help="queries per tenant and design")
    parser.add_argument("--load-batch", type=int, default=1000)
    parser.add_argument("--small-writes", type=int, default=50)
    parser.add_argument("--new-tenants", type=int, default=20)
    parser.add_argument("--tag", default="", help="suffix for the result files")
    args = parser.parse_args()
    machine = host_info()
    vectors = clustered(args.rows, args.dim, seed=11, centres_seed=5)
    queries = clustered(args.queries, args.dim, seed=12, centres_seed=5)  # same centres, new points
    layouts: dict[str, Any] = {}
    for layout in args.layouts:
        owners = layout_tenants(layout, args.rows, args.big_share)
        layouts[layout] = {
            kind: run_design(kind, layout, vectors, owners, queries, args) for kind in ("filter", "native")
        }
    from tools.servers import WEAVIATE

    result = {
        "benchmark": "weaviate_tenancy",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_avg_at_end": [round(x, 2) for x in psutil.getloadavg()],
        "command": " ".join(sys.argv),
        "server_version": WEAVIATE.version,
        "rows": args.rows,
        "dim": args.dim,
        "queries": args.queries,
        "load_batch": args.load_batch,
        "big_share": args.big_share,
        "run_id": uuid.uuid4().hex[:8],
        "layouts": layouts,
    }
    stem = f"weaviate_tenancy_{args.rows}_{dt.date.today().isoformat()}" + (f"_{args.tag}" if args.tag else "")
    write_report(RESULTS / stem, result, markdown(result))


if __name__ == "__main__":
    main()
