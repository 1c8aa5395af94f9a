"""Moderation commands: blocklist, flagged, explain, rescore, calibrate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from producers.cli.base import handle_errors, main, settings_of
from producers.client import Client
from producers.moderation import add_to_blocklist, labelled_files, require_vectors_of, rescore, score_labelled
from producers.reviewed import reviewed_examples
from shared.audit import Action, AuditLog, cli_actor
from shared.config import Settings
from shared.events import Moderation
from shared.models.catalog import CATALOG
from shared.moderation.blocklist import Blocklist
from shared.moderation.calibration import DEFAULT_THRESHOLDS, CategoryCurve, precision_recall
from shared.moderation.decision import describe_signal
from shared.moderation.log import DecisionEntry, DecisionLog
from shared.moderation.policy import Policy, load_policy


def _policy(settings: Settings, path: Path | None, model: str | None = None) -> Policy:
    """The policy file's section for `model` (default: OMNIBIND_MODEL__NAME's)."""
    return load_policy(path or settings.moderation.policy).for_model(model or settings.model.name)


MODEL_OPTION = click.option(
    "--model",
    "model",
    type=click.Choice(sorted(CATALOG)),
    default=None,
    help="whose policy section to apply; the stored vectors must be this model's (default: OMNIBIND_MODEL__NAME)",
)


def _decision_log(client: Client) -> DecisionLog:
    return DecisionLog.from_settings(client.redis, client.settings)


def _describe(decision: Moderation, indent: str = "  ") -> list[str]:
    lines = [
        f"{indent}action {decision.action.value}, policy {decision.policy_name} {decision.policy_version}, "
        f"model {decision.model} {(decision.checkpoint or '')[:12]}"
    ]
    lines += [f"{indent}- {describe_signal(signal)}" for signal in decision.reasons]
    lines += [f"{indent}note: {note}" for note in decision.notes]
    return lines


# -- blocklist ----------------------------------------------------------------------------------


@main.group()
def blocklist() -> None:
    """Known-bad examples: uploads with the same bytes, or an embedding within the policy's
    blocklist.max_distance, are flagged with the example's category."""


@blocklist.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", required=True, help="a category of the policy")
@click.option("--note", default=None, help="why it is listed (shown with matches)")
@click.option("--exact-only", is_flag=True, help="match identical bytes only (no embedding, no workers needed)")
@click.option("--tenant", default=None, help="flag this tenant's uploads only (default: every upload, operator-wide)")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True)
@click.pass_context
@handle_errors
def blocklist_add(
    ctx: click.Context,
    file: Path,
    category: str,
    note: str | None,
    exact_only: bool,
    tenant: str | None,
    timeout_s: float,
) -> None:
    """List FILE (image, text or audio) as an example of CATEGORY. Its embedding is computed
    by the running workers unless --exact-only. Without --tenant the entry is operator-wide:
    it flags every tenant's uploads; with it, only that tenant's."""
    settings = settings_of(ctx)
    with Client(settings, source="cli") as client:
        entry = add_to_blocklist(
            client,
            file,
            category=category,
            policy=_policy(settings, None),
            note=note,
            exact_only=exact_only,
            timeout_s=timeout_s,
            actor=cli_actor(),
            tenant=tenant,
        )
    how = "exact bytes only" if entry.checkpoint is None else f"bytes and embedding ({entry.model})"
    click.echo(f"{entry.id} {entry.category} {entry.modality.value} {file.name}: matches {how}")


@blocklist.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def blocklist_list(ctx: click.Context, as_json: bool) -> None:
    """Show every blocklist entry."""
    with Client(settings_of(ctx)) as client:
        entries = Blocklist(client.redis, client.settings.queue_prefix).entries()
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    for e in entries:
        how = "exact" if e.checkpoint is None else "exact+embedding"
        scope = e.tenant or "*"
        click.echo(
            f"{e.id}  {scope:<12} {e.category:<14} {e.modality.value:<6} {how:<16} {e.filename or ''} {e.note or ''}"
        )
    click.echo(f"{len(entries)} entries")


@blocklist.command("remove")
@click.argument("entry_id")
@click.pass_context
@handle_errors
def blocklist_remove(ctx: click.Context, entry_id: str) -> None:
    """Delete one entry (by the id `blocklist add` printed)."""
    with Client(settings_of(ctx)) as client:
        if not Blocklist(client.redis, client.settings.queue_prefix).remove(entry_id, actor=cli_actor()):
            raise click.ClickException(f"no blocklist entry {entry_id}")
    click.echo(f"removed {entry_id}")


# -- decisions ----------------------------------------------------------------------------------


def _entries_out(entries: list[DecisionEntry], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    for entry in entries:
        decision = entry.decision
        when = decision.decided_at.isoformat(timespec="seconds") if decision.decided_at else "?"
        categories = ", ".join(decision.categories) or "-"
        click.echo(f"{entry.upload_id}  {when}  {decision.action.value}: {categories}  ({entry.source})")
        click.echo("\n".join(_describe(decision)))


@main.command()
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def flagged(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent flagged uploads, newest first, with the reasons (from the decision log)."""
    with Client(settings_of(ctx)) as client:
        entries = _decision_log(client).newest(limit=limit, flagged_only=True)
    if not entries and not as_json:
        click.echo("no flagged uploads in the decision log")
        return
    _entries_out(entries, as_json)


@main.command()
@click.argument("upload_id")
@click.option("--history", is_flag=True, help="every logged decision of the upload, not just the latest")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def explain(ctx: click.Context, upload_id: str, history: bool, as_json: bool) -> None:
    """Why an upload was (not) flagged: its decision with every signal, threshold and band."""
    with Client(settings_of(ctx)) as client:
        entries = _decision_log(client).newest(limit=1000 if history else 1, upload_id=upload_id)
        if not entries:
            record = client.vectors.get(upload_id)
            if record is None or record.moderation.policy_version is None:
                raise click.ClickException(f"no moderation decision for upload {upload_id}")
            entries = [DecisionEntry(entry_id="-", upload_id=upload_id, source="record", decision=record.moderation)]
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    for entry in entries:
        decision = entry.decision
        click.echo(f"{upload_id}: {'FLAGGED' if decision.flagged else 'not flagged'} ({entry.source})")
        click.echo("\n".join(_describe(decision)))
        for signal in decision.signals:
            if signal not in decision.reasons:
                click.echo(f"  . {describe_signal(signal)}")


# -- rescore, calibrate -------------------------------------------------------------------------


@main.command("rescore")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--dry-run", is_flag=True, help="report what would change; write nothing")
@click.option(
    "--tenant",
    default=None,
    help="only this tenant's uploads, under its policy (OMNIBIND_MODERATION__TENANT_POLICIES) unless --policy",
)
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True, help="for prompt embeddings")
@MODEL_OPTION
@click.pass_context
@handle_errors
def rescore_command(
    ctx: click.Context,
    policy_path: Path | None,
    dry_run: bool,
    tenant: str | None,
    timeout_s: float,
    model: str | None,
) -> None:
    """Recompute moderation of the stored uploads from their stored vectors (no re-embedding;
    the GPU is only asked for the prompt embeddings of a policy it has not seen). Without
    --tenant: every upload except those of tenants with a policy of their own. The policy
    file's section for --model applies, and the stored vectors must be that model's."""
    settings = settings_of(ctx)
    tenant_policies = settings.moderation.tenant_policies
    model = model or settings.model.name
    policy = _policy(settings, policy_path or (tenant_policies.get(tenant) if tenant else None), model)
    skip = frozenset() if tenant else frozenset(tenant_policies)
    with Client(settings, source="cli") as client:
        require_vectors_of(client, model)
        summary = rescore(client, policy, write=not dry_run, timeout_s=timeout_s, tenant=tenant, skip_tenants=skip)
        if not dry_run:
            AuditLog.from_settings(client.redis, settings).record(
                Action.MODERATION_RESCORE,
                actor=cli_actor(),
                target=f"{policy.name} {policy.version}",
                tenant=tenant,
                detail={"records": summary.records, "changed": summary.changed, "flagged_after": summary.flagged_after},
            )
    verb = "would change" if dry_run else "changed"
    click.echo(
        f"policy {policy.name} {policy.version} ({policy.model or 'default section'} for {model}): "
        f"{summary.records} records, {verb} {summary.changed}; "
        f"flagged {summary.flagged_before} -> {summary.flagged_after}"
    )
    for category, count in sorted(summary.categories_after.items()):
        click.echo(f"  {category}: {count}")


@main.command()
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--reviewed", is_flag=True, help="label with moderators' decisions instead of a folder")
@click.option("--tenant", default=None, help="with --reviewed: only this tenant's reviewed uploads")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--thresholds", default=None, help="comma-separated candidates (default 0.05, 0.10 ... 0.95)")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@MODEL_OPTION
@click.pass_context
@handle_errors
def calibrate(
    ctx: click.Context,
    directory: Path | None,
    reviewed: bool,
    tenant: str | None,
    policy_path: Path | None,
    thresholds: str | None,
    timeout_s: float,
    as_json: bool,
    model: str | None,
) -> None:
    """Per-category precision/recall of the zero-shot scores at candidate thresholds, on a
    labelled folder: DIRECTORY/<category>/... and DIRECTORY/safe/... (needs running workers);
    or, with --reviewed, on the uploads moderators approved (safe) or blocked (a positive of
    the category) in the console or the API: their stored scores, nothing embedded again."""
    if (directory is None) == (not reviewed):
        raise click.UsageError("give a DIRECTORY or --reviewed (not both)")
    settings = settings_of(ctx)
    model = model or settings.model.name
    policy = _policy(settings, policy_path, model)
    cuts = [float(t) for t in thresholds.split(",")] if thresholds else list(DEFAULT_THRESHOLDS)
    with Client(settings, source="cli") as client:
        if directory is not None:
            scored, skipped = score_labelled(
                client, policy, labelled_files(directory, policy), timeout_s=timeout_s, model=model
            )
        else:
            require_vectors_of(client, model)  # the reviewed uploads' stored scores are the index's model's
            scored, skipped = reviewed_examples(client, lambda t: tenant is None or t == tenant), []
            click.echo(f"{len(scored)} reviewed uploads", err=True)
    curves = precision_recall(scored, cuts)
    if as_json:
        click.echo(json.dumps([_curve_doc(c, policy) for c in curves], indent=2))
    else:
        for curve in curves:
            click.echo("\n".join(_curve_lines(curve, policy)))
    for path, why in skipped:
        click.echo(f"skipped {path}: {why}", err=True)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def _curve_lines(curve: CategoryCurve, policy: Policy) -> list[str]:
    current = policy.categories[curve.category].thresholds_for(curve.modality)
    lines = [
        f"{curve.category} ({curve.modality.value}): {curve.positives} positive, {curve.negatives} negative; "
        f"policy review {current.review:g}, block {current.block:g}",
        "  threshold  precision  recall",
    ]
    lines += [f"  {p.threshold:9.2f}  {_fmt(p.precision):>9}  {_fmt(p.recall):>6}" for p in curve.points]
    return lines


def _curve_doc(curve: CategoryCurve, policy: Policy) -> dict[str, object]:
    current = policy.categories[curve.category].thresholds_for(curve.modality)
    return {
        "category": curve.category,
        "modality": curve.modality.value,
        "positives": curve.positives,
        "negatives": curve.negatives,
        "policy": {"review": current.review, "block": current.block},
        "points": [{"threshold": p.threshold, "precision": p.precision, "recall": p.recall} for p in curve.points],
    }
