"""docker-compose.yml stays wired to settings and commands that exist (no Docker engine runs
here, so the file is checked statically)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from producers.cli import main as cli
from shared.config import Settings, WorkerSettings
from shared.config_reference import env_reference
from shared.redis_keys import RedisKeys
from tools.servers import MINIO, WEAVIATE

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
OMNIBIND_DOCKERFILE = "docker/Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|ACCESS_KEY|_USER$")
REQUIRED_REF = re.compile(r"\$\{[A-Z_]+:\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def omnibind_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run omnibind's own image (built from this repository)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if (svc.get("build") or {}).get("dockerfile") == OMNIBIND_DOCKERFILE
    }


def dockerfile_arg_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile.name} declares no ARG {name}=<default>"
    return match.group(1)


def test_the_production_stack_has_every_service(compose: dict[str, Any]) -> None:
    expected = {
        "redis",
        "minio",
        "weaviate",
        "cpu-worker",
        "gpu-worker",
        "index-worker",
        "speech-worker",
        "api",
        "metrics",
        "flower",
        "ingest-bridge",
        "webhooks",
    }
    assert expected <= compose["services"].keys()


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    missing = [name for name, svc in compose["services"].items() if "healthcheck" not in svc]
    assert not missing


def test_every_omnibind_variable_in_compose_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = {var.name for var in env_reference()}
    used = {
        key
        for svc in compose["services"].values()
        for key in (svc.get("environment") or {})
        if key.startswith("OMNIBIND_")
    }
    assert used, "workers must be configured through OMNIBIND_* variables"
    assert used <= known, f"unknown settings: {sorted(used - known)}"


def test_worker_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    services = omnibind_services(compose)
    assert {"cpu-worker", "gpu-worker", "index-worker", "speech-worker"} <= services.keys()
    for name, svc in services.items():
        for args in (svc["command"], svc["healthcheck"]["test"][2:]):
            command = cli.get_command(click.Context(cli), args[0])
            assert command is not None, f"{name}: unknown command {args}"
            with command.make_context(args[0], list(args[1:])) as sub:  # raises on bad arguments
                assert isinstance(sub, click.Context)


def test_secrets_come_from_the_environment_and_are_required(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.search(str(value)), f"{name}.{key} must be ${{VAR:?message}}"


def test_only_the_api_publishes_a_port_and_only_the_gpu_worker_and_webhooks_reach_out(compose: dict[str, Any]) -> None:
    """Backends stay unreachable from outside. The API is the one way in: it publishes its
    port (on 127.0.0.1 unless API_BIND says otherwise) from a network of its own, `edge`. The
    gpu-worker downloads the checkpoint once; the webhook dispatcher POSTs to your endpoints."""
    assert compose["networks"]["internal"]["internal"] is True
    allowed = {"gpu-worker": {"internal", "egress"}, "webhooks": {"internal", "egress"}, "api": {"internal", "edge"}}
    for name, svc in compose["services"].items():
        if name != "api":
            assert "ports" not in svc, f"{name} publishes ports"
        assert set(svc.get("networks", [])) == allowed.get(name, {"internal"}), name
    assert compose["services"]["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_the_api_requires_keys_and_flower_requires_a_password(compose: dict[str, Any]) -> None:
    api_env = compose["services"]["api"]["environment"]
    assert REQUIRED_REF.search(api_env["OMNIBIND_API__KEYS"])
    assert REQUIRED_REF.search(compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"])


def test_the_gpu_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_minio_publishes_where_the_bridge_listens(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]["environment"]
    targets = {key.rsplit("_", 1)[1] for key in minio if key.startswith("MINIO_NOTIFY_REDIS_ENABLE_")}
    assert len(targets) == 1
    (target,) = targets
    assert minio[f"MINIO_NOTIFY_REDIS_ENABLE_{target}"] == "on"
    assert minio[f"MINIO_NOTIFY_REDIS_FORMAT_{target}"] == "access", "the bridge reads access-format lists"
    assert minio[f"MINIO_NOTIFY_REDIS_ADDRESS_{target}"] == "redis:6379"
    assert minio[f"MINIO_NOTIFY_REDIS_QUEUE_DIR_{target}"].startswith("/"), "MinIO wants an absolute queue_dir"
    default_prefix = Settings.model_fields["queue_prefix"].default
    assert minio[f"MINIO_NOTIFY_REDIS_KEY_{target}"] == RedisKeys(default_prefix).minio_events
    bridge = compose["services"]["ingest-bridge"]
    assert bridge["environment"]["OMNIBIND_BRIDGE__MINIO_NOTIFY_ARN"] == f"arn:minio:sqs::{target}:redis"
    assert bridge.get("hostname"), "a fixed hostname keeps the bridge's consumer name across restarts"


def test_redis_requires_a_password_keeps_an_aof_and_never_evicts(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    for flag in ('--requirepass "$$REDIS_PASSWORD"', "--appendonly yes", "--maxmemory-policy noeviction"):
        assert flag in command
    env = compose["x-omnibind-env"]
    assert env["OMNIBIND_REDIS__PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}", "workers authenticate to Redis"
    assert env["OMNIBIND_REDIS_URL"] == "redis://redis:6379/0"


def test_no_variable_is_interpolated_into_a_url(compose: dict[str, Any]) -> None:
    """A password interpolated into a URL breaks on / # ? % @ : (compose does not escape it);
    secrets go in variables of their own, which omnibind escapes where it builds a URL."""
    envs = [compose["x-omnibind-env"], *((svc.get("environment") or {}) for svc in compose["services"].values())]
    for env in envs:
        for key, value in env.items():
            assert not re.search(r"://[^\s\"]*\$\{", str(value or "")), f"{key}={value}"


def test_weaviate_and_minio_refuse_anonymous_access(compose: dict[str, Any]) -> None:
    weaviate = compose["services"]["weaviate"]["environment"]
    assert weaviate["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert weaviate["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert REQUIRED_REF.search(weaviate["AUTHENTICATION_APIKEY_ALLOWED_KEYS"])
    minio = compose["services"]["minio"]["environment"]
    assert REQUIRED_REF.search(minio["MINIO_ROOT_USER"]) and REQUIRED_REF.search(minio["MINIO_ROOT_PASSWORD"])
    assert REQUIRED_REF.search(minio["MINIO_NOTIFY_REDIS_PASSWORD_OMNIBIND"]), "bucket notifications log in to Redis"


def test_worker_clocks_keep_messages_within_the_visibility_timeout(compose: dict[str, Any]) -> None:
    env = compose["x-omnibind-env"]
    visibility_s = float(env["OMNIBIND_WORKER__VISIBILITY_TIMEOUT_S"])
    time_limit_s = float(env["OMNIBIND_WORKER__TASK_TIME_LIMIT_S"])
    backoff_max_s = float(env.get("OMNIBIND_WORKER__RETRY_BACKOFF_MAX_S", WorkerSettings().retry_backoff_max_s))
    assert backoff_max_s + 2 * time_limit_s < visibility_s


def test_cpu_workers_bound_the_memory_of_their_pool_processes(compose: dict[str, Any]) -> None:
    env = compose["services"]["cpu-worker"]["environment"]
    assert "OMNIBIND_WORKER__MAX_CHILD_MEMORY_MB" in env


def test_minio_is_built_from_the_module_version_the_tests_run(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    build = minio["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    assert build["args"]["MINIO_VERSION"] == MINIO.version
    assert dockerfile_arg_default(dockerfile, "MINIO_VERSION") == MINIO.version
    text = dockerfile.read_text()
    assert f"{MINIO.package}@${{MINIO_VERSION}}" in text and "CGO_ENABLED=0" in text
    assert minio["image"].rsplit(":", 1)[1] == MINIO.version


def test_minio_health_is_probed_over_http_without_mc(compose: dict[str, Any]) -> None:
    test = compose["services"]["minio"]["healthcheck"]["test"]
    assert "mc" not in test
    assert test[-1] == "http://127.0.0.1:9000/minio/health/ready"
    assert test[1] == "curl" and "-f" in test[2], "curl must fail on a non-2xx answer"


def test_weaviate_runs_the_version_the_tests_run_without_auto_schema_or_telemetry(compose: dict[str, Any]) -> None:
    weaviate = compose["services"]["weaviate"]
    assert weaviate["image"] == f"cr.weaviate.io/semitechnologies/weaviate:{WEAVIATE.version.removeprefix('v')}"
    assert weaviate["environment"]["AUTOSCHEMA_ENABLED"] == "false"
    assert weaviate["environment"]["DISABLE_TELEMETRY"] == "true"


def test_no_service_runs_a_latest_or_untagged_image_except_omnibind_s_own(compose: dict[str, Any]) -> None:
    own = omnibind_services(compose)
    assert {"cpu-worker", "api"} <= own.keys()
    for name, svc in compose["services"].items():
        if name in own:
            continue
        image = svc.get("image")
        assert image, f"{name} names no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"


def test_cpu_worker_concurrency_is_set_per_container_and_defaults_to_its_cpus(compose: dict[str, Any]) -> None:
    env = compose["services"]["cpu-worker"]["environment"]
    assert env["OMNIBIND_WORKER__CPU_CONCURRENCY"] == "${OMNIBIND_WORKER__CPU_CONCURRENCY:-0}"
    assert WorkerSettings().cpu_concurrency == 0, "0 = decided from the container's CPUs (shared.cpus)"
