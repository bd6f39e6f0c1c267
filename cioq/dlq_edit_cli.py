"""``cioq dlq edit|repair``: fix dead letters and replay them (`register` adds them to
``cioq dlq``).

``edit`` opens one letter's payload in ``$EDITOR`` (Customer.io's error printed first)
and replays the saved fix; ``repair`` drops or renames one field on every letter a
filter selects, ``--dry-run`` first. Both go through `service.store.dead_letter_repair`,
as the admin API and the console do: the same ingest rules, the same audit.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from cioq import dlq_cli
from cioq.dlq_cli import (
    All,
    Class,
    DryRun,
    Ids,
    LaneName,
    OpType,
    Person,
    ProducerName,
    Reason,
    Since,
    Until,
    Workspace,
    Yes,
    _filter,
    _run,
)
from service.config import Settings
from service.errors import InvalidRequest
from service.jobs import job_kind
from service.store.dead_letter_repair import BulkOutcome, FieldRule, LetterRepair, Repaired


def _who() -> str:
    """The audit's name for a CLI operator: the account that ran the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "cli"


def _strict(workspace: str) -> bool:
    assert dlq_cli._settings is not None
    settings: Settings = dlq_cli._settings()
    return settings.workspace(workspace).strict_validation


def _edit(text: str) -> str | None:
    """`text` as the operator saved it in ``$VISUAL``/``$EDITOR``; None when unchanged."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        file.write(text)
    path = Path(file.name)
    try:
        subprocess.run([*shlex.split(editor), str(path)], check=True)
        edited = path.read_text()
    except (OSError, subprocess.CalledProcessError) as exc:
        typer.echo(f"cioq dlq: the editor failed ({exc})", err=True)
        raise typer.Exit(1) from exc
    finally:
        path.unlink(missing_ok=True)
    return None if edited == text else edited


def _twice_confirmed(kind: str, yes: bool, count: int = 1) -> bool:
    if yes or not job_kind(kind).at_most_once:
        return True
    if typer.confirm(
        f"{count} of these letters are App API sends or broadcast triggers. Customer.io may "
        "already have sent them (check its message log): replaying may deliver them twice. "
        "Replay?"
    ):
        return True
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``edit`` and ``repair`` to the ``cioq dlq`` app."""
    app.command()(edit)
    app.command()(repair)


def edit(
    letter_id: str,
    workspace: Workspace = "default",
    yes: Yes = False,
) -> None:
    """Fix one letter's payload in $EDITOR, then replay it (checked as a new call)."""
    stored = _run(workspace, lambda dlq: dlq.get(workspace, letter_id))
    if stored is None:
        typer.echo(f"cioq dlq: no dead letter {letter_id} in {workspace!r}", err=True)
        raise typer.Exit(1)
    letter = stored.letter
    if job_kind(letter.kind).repair is None:
        typer.echo(
            f"cioq dlq: a {letter.kind} letter cannot be edited; replay or purge it", err=True
        )
        raise typer.Exit(2)
    typer.echo(
        f"Customer.io: {letter.status or '-'} {letter.reason}"
        + (f" ({letter.field})" if letter.field else "")
        + (f": {letter.message}" if letter.message else ""),
        err=True,
    )
    text = orjson.dumps(orjson.loads(letter.payload), option=orjson.OPT_INDENT_2).decode()
    strict = _strict(workspace)
    while True:
        edited = _edit(text + "\n")
        if edited is None:
            typer.echo("cioq dlq: not changed; the letter stays as it is", err=True)
            raise typer.Exit(1)
        try:
            payload = orjson.loads(edited)
        except orjson.JSONDecodeError as exc:
            typer.echo(f"cioq dlq: payload: not JSON ({exc})", err=True)
            text = edited
            if typer.confirm("Edit again?"):
                continue
            raise typer.Exit(2) from exc
        twice = _twice_confirmed(letter.kind, yes)
        try:
            done = _repair_once(workspace, letter_id, payload, strict, twice)
            break
        except InvalidRequest as exc:
            for error in exc.errors:
                typer.echo(f"cioq dlq: {error.field}: {error.rule}: {error.message}", err=True)
            if exc.status != 422 or not typer.confirm("Edit again?"):
                raise typer.Exit(2) from exc
            text = edited
    typer.echo(f"repaired and replayed {done.id}")
    for line in done.changes:
        typer.echo(f"  {line}")


def _repair_once(
    workspace: str, letter_id: str, payload: Any, strict: bool, twice: bool
) -> Repaired:
    """One repair; a refused fix is raised (not reported, as `_run` would) so the editor
    can reopen."""

    async def guarded(dlq: Any) -> Repaired | InvalidRequest:
        try:
            return await LetterRepair(dlq).repair(
                workspace, letter_id, payload, strict=strict, who=_who(), may_deliver_twice=twice
            )
        except InvalidRequest as exc:
            return exc

    done = _run(workspace, guarded)
    if isinstance(done, InvalidRequest):
        raise done
    return done


def repair(
    ids: Ids = None,
    drop: Annotated[str | None, typer.Option(help="Drop this field (dotted path)")] = None,
    rename: Annotated[str | None, typer.Option(help="Rename this field (dotted path)")] = None,
    to: Annotated[str | None, typer.Option(help="The renamed field's new name")] = None,
    workspace: Workspace = "default",
    lane: LaneName = None,
    reason: Reason = None,
    outcome_class: Class = None,
    op: OpType = None,
    person: Person = None,
    since: Since = None,
    until: Until = None,
    producer: ProducerName = None,
    every: All = False,
    dry_run: DryRun = False,
    yes: Yes = False,
) -> None:
    """Drop or rename one field on every selected letter that has it, and replay them."""
    if (drop is None) == (rename is None):
        raise typer.BadParameter("give one of --drop FIELD or --rename FIELD --to NAME")
    try:
        if drop is not None:
            rule = FieldRule.parse("drop", drop, to)
        else:
            rule = FieldRule.parse("rename", rename, to)
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.errors[0].message) from exc
    flt = _filter(ids, lane, reason, outcome_class, op, person, since, until, producer)
    if flt.is_empty and not every:
        raise typer.BadParameter("name ids or a filter, or pass --all to repair every letter")
    strict = _strict(workspace)

    def run(dry: bool, twice: bool) -> BulkOutcome:
        return _run(
            workspace,
            lambda dlq: LetterRepair(dlq).bulk(
                workspace,
                flt,
                rule,
                strict=strict,
                who=_who(),
                dry_run=dry,
                may_deliver_twice=twice,
            ),
        )

    preview = run(True, False)
    typer.echo(
        f"{preview.matched} matched; {preview.fixable} to {rule.text}, "
        f"{preview.invalid} still invalid after it"
    )
    if preview.example is not None:
        typer.echo(f"e.g. {preview.example['id']}:")
        for line in preview.example["changes"]:
            typer.echo(f"  {line}")
    if preview.first_invalid is not None:
        first = preview.first_invalid
        named = "; ".join(f"{e['field']}: {e['message']}" for e in first["errors"])
        typer.echo(f"still invalid, e.g. {first['id']}: {named}")
    if dry_run or not preview.fixable:
        return
    twice = yes or not preview.sends or _twice_confirmed("app", False, preview.sends)
    done = run(False, twice)
    typer.echo(f"{done.fixable} fixed, {done.repaired} replayed")
