"""Build the real MinIO and Weaviate servers from their Go modules, once per machine.

    python tools/servers.py build        # both, idempotent (what `make servers` runs)
    python tools/servers.py path minio   # where the binary is (exit 1 if not built)
    python tools/servers.py status       # pinned versions and what is built

Binaries go to ``$OMNIBIND_SERVERS_DIR`` (default ``~/.cache/omnibind/servers``), one folder
per module version, so a version bump builds beside the old one and nothing lands in the
repository. Go's own module and build caches make a rebuild after a version bump cheap.
Without a Go toolchain, ``build`` says so and exits 0: the live tests then skip with that
reason (under ``CI=true`` they fail instead, see tests/support/live.py).

Stdlib only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True)
class GoServer:
    name: str
    package: str  # what `go install` builds
    version: str  # module version, pinned
    binary: str  # the file `go install` writes
    note: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


# MinIO publishes source only now; its release tags (RELEASE.…) are not semver, so the module
# proxy serves the repository as pseudo-versions, and only the final commit (after the last
# release, RELEASE.2025-10-15T17-29-55Z) is served here. docker/minio.Dockerfile builds the same.
MINIO = GoServer(
    "minio",
    "github.com/minio/minio",
    "v0.0.0-20260212201848-7aac2a2c5b7c",
    "minio",
    "final commit of github.com/minio/minio (2026-02-12)",
)
# docker-compose.yml runs the image of this same version (tests/test_compose.py checks).
WEAVIATE = GoServer(
    "weaviate",
    "github.com/weaviate/weaviate/cmd/weaviate-server",
    "v1.35.2",
    "weaviate-server",
    "Weaviate release v1.35.2",
)
SERVERS: dict[str, GoServer] = {server.name: server for server in (MINIO, WEAVIATE)}


def servers_dir() -> Path:
    configured = os.environ.get("OMNIBIND_SERVERS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "omnibind" / "servers"


def binary_path(server: GoServer) -> Path:
    return servers_dir() / f"{server.name}-{server.version}" / server.binary


def built(server: GoServer) -> Path | None:
    """The binary of `server` if it has been built, else None."""
    path = binary_path(server)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def go_toolchain() -> str | None:
    return shutil.which("go")


def build(server: GoServer, *, go: str) -> Path:
    """`go install` `server` into its cache folder (atomically: a half-built binary is never
    found) and return the binary. Raises `RuntimeError` with go's output tail on failure."""
    target = binary_path(server)
    if built(server):
        print(f"{server.name}: already built ({_size(target)}) at {target}", flush=True)
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    print(f"{server.name}: building {server.spec} with {go} (first time takes minutes)", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent.parent, prefix=f".{server.name}-") as tmp:
        env = {**os.environ, "GOBIN": tmp, "GOFLAGS": os.environ.get("GOFLAGS", "") + " -mod=mod"}
        command = [go, "install", "-v", "-ldflags=-s -w", server.spec]
        tail = _run_with_progress(command, env, server.name, started)
        produced = Path(tmp) / server.binary
        if not produced.is_file():
            raise RuntimeError(f"{server.name}: `{' '.join(command)}` failed:\n" + "\n".join(tail))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(produced, target)
    print(f"{server.name}: built in {time.monotonic() - started:.0f} s, {_size(target)}, at {target}", flush=True)
    return target


def _run_with_progress(command: list[str], env: dict[str, str], name: str, started: float) -> list[str]:
    """Run `command`, printing a progress line every few seconds; returns its last lines."""
    tail: list[str] = []
    packages = downloads = 0
    last = time.monotonic()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-40:], line.rstrip()]
            if line.startswith("go: downloading"):
                downloads += 1
            elif not line.startswith("go:"):
                packages += 1
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                print(
                    f"{name}: {time.monotonic() - started:.0f} s, {downloads} modules downloaded, "
                    f"{packages} packages compiled",
                    flush=True,
                )
        if proc.wait() != 0:
            tail.append(f"(exit status {proc.returncode})")
    return tail


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build (once) and locate the MinIO and Weaviate servers the live tests run.",
        epilog=f"Binaries live under $OMNIBIND_SERVERS_DIR (now {servers_dir()}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="go install the pinned servers that are not built yet")
    build_cmd.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(SERVERS)} (default: all)")
    build_cmd.add_argument("--require-go", action="store_true", help="fail instead of skipping when Go is missing")
    path_cmd = sub.add_parser("path", help="print a built server's binary path (exit 1 if not built)")
    path_cmd.add_argument("name", choices=list(SERVERS))
    sub.add_parser("status", help="pinned versions and which are built")
    args = parser.parse_args(argv)

    if args.command == "path":
        found = built(SERVERS[args.name])
        if found is None:
            print(f"{args.name} is not built; run `make servers`", file=sys.stderr)
            return 1
        print(found)
        return 0
    if args.command == "status":
        for server in SERVERS.values():
            found = built(server)
            print(f"{server.name:9} {server.spec}  {'built: ' + str(found) if found else 'not built'}")
        return 0
    unknown = sorted(set(args.names) - set(SERVERS))
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    go = go_toolchain()
    if go is None:
        print("Go is not installed: MinIO and Weaviate are not built and the live tests will skip.", flush=True)
        return 2 if args.require_go else 0
    try:
        for name in args.names or list(SERVERS):
            build(SERVERS[name], go=go)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
