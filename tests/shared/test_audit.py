"""The audit log on a real redis-server: every admin action lands in it with its actor and
time, through the CLI (`omnibind keys`, `omnibind dead --retry`, `omnibind audit`) and through
the stores (blocklist, human moderation decisions); automatic ones (pipeline decisions) do not."""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from pathlib import Path

import redis
from click.testing import CliRunner

from producers.cli import main
from shared.audit import Action, AuditLog, cli_actor
from shared.events import Modality, Moderation, UploadEvent
from shared.moderation.blocklist import Blocklist, BlocklistEntry, entry_id_for
from shared.moderation.log import DecisionLog
from shared.streams import DeadLetterStream


def run_cli(redis_url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"OMNIBIND_REDIS_URL": redis_url, "OMNIBIND_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_cli_admin_actions_are_audited_with_the_cli_actor_and_read_back_by_omnibind_audit(
    redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    code, _ = run_cli(redis_url, tmp_path, "keys", "create", "--tenant", "acme", "--roles", "ingest")
    assert code == 0
    key_id = AuditLog(redis_conn).newest()[0].target
    assert run_cli(redis_url, tmp_path, "keys", "revoke", key_id)[0] == 0
    event = UploadEvent(id="acme:u1", text="hello", tenant="acme")
    DeadLetterStream(redis_conn).dead_letter(event.model_dump_json(), "preprocess", "X", "oops", "failed", 3)
    assert run_cli(redis_url, tmp_path, "dead", "--retry")[0] == 0

    code, out = run_cli(redis_url, tmp_path, "audit", "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["action"], e["target"], e["tenant"]) for e in entries] == [
        (Action.DEAD_LETTER_RETRY, entries[0]["target"], "acme"),
        (Action.KEY_REVOKE, key_id, "acme"),
        (Action.KEY_CREATE, key_id, "acme"),
    ]
    actor = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    assert {e["actor"] for e in entries} == {actor} == {cli_actor()}
    assert entries[0]["detail"] == {"upload_id": "acme:u1", "stage": "preprocess", "outcome": "requeued"}
    assert entries[2]["detail"] == {"tenants": ["acme"], "roles": ["ingest"]}
    assert all(e["at"].endswith("Z") or "+00:00" in e["at"] for e in entries)

    code, out = run_cli(redis_url, tmp_path, "audit", "--action", "key.")
    assert code == 0 and len(out.splitlines()) == 2 and all(key_id in line for line in out.splitlines())


def test_blocklist_changes_and_a_persons_decisions_are_audited_the_pipelines_are_not(redis_conn: redis.Redis) -> None:
    sha = hashlib.sha256(b"bad").hexdigest()
    blocklist = Blocklist(redis_conn)
    entry = BlocklistEntry(id=entry_id_for(sha), category="violence", sha256=sha, modality=Modality.IMAGE)
    blocklist.add(entry, actor="key:abc")
    assert blocklist.remove(entry.id, actor="key:abc")
    assert not blocklist.remove(entry.id, actor="key:abc"), "nothing removed, nothing audited"
    decisions = DecisionLog(redis_conn)
    decisions.append("acme:u1", Moderation())  # the pipeline's
    decisions.append("acme:u1", Moderation(), source="console", actor="key:mod1")

    entries = AuditLog(redis_conn).newest()

    assert [(e.action, e.actor, e.target, e.tenant) for e in entries] == [
        (Action.MODERATION_DECISION, "key:mod1", "acme:u1", "acme"),
        (Action.BLOCKLIST_REMOVE, "key:abc", entry.id, None),
        (Action.BLOCKLIST_ADD, "key:abc", entry.id, None),
    ]
    assert entries[0].detail["source"] == "console" and entries[0].detail["flagged"] is False
    assert AuditLog(redis_conn).newest(tenant="acme", actor="key:mod1")[0].target == "acme:u1"


def test_the_audit_stream_is_capped_near_its_maxlen(redis_conn: redis.Redis) -> None:
    audit = AuditLog(redis_conn, maxlen=100)
    for n in range(1000):
        audit.record("test.action", actor="cli:t", target=str(n))
    assert 100 <= audit.length() < 1000, "approximate trimming keeps at least maxlen, drops the oldest"
    assert audit.newest(limit=1)[0].target == "999"
