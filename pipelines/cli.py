"""The `predcache` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, PredcacheError, flat_message
from pipelines.settings import Settings

EXIT_USAGE = 2
DEMO_DAY = date(2013, 7, 1)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date in YYYY-MM-DD form") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


class _Bar:
    """A tqdm bar on stderr fed from the shard ledger (hidden when stderr is not a terminal)."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        from pipelines.engines.output import terminal_stderr

        self._stream = terminal_stderr()
        self._bar = tqdm(
            total=0, desc=desc, unit="row", unit_scale=True, file=self._stream, disable=None, leave=False
        )

    def __call__(self, shards_done: int, shards_total: int, rows_done: int, rows_total: int) -> None:
        if self._bar.total != rows_total:
            self._bar.total = rows_total
        self._bar.n = rows_done
        self._bar.set_postfix_str(f"shards {shards_done}/{shards_total}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
        self._stream.close()


def _print_summary(summary: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_json()))
        return
    state = "skipped (already done)" if summary.skipped else ("resumed" if summary.resumed else "done")
    print(
        f"run {summary.run_id} {state}: {summary.model}/{summary.version} on {summary.engine}, "
        f"{summary.rows_in} rows in, {summary.rows_out} scored, {summary.rows_rejected} rejected, "
        + (f"{summary.rows_unchanged} unchanged, " if summary.rows_unchanged else "")
        + (f"{summary.rows_pruned} pruned, " if summary.rows_pruned else "")
        + f"{summary.shards_scored}/{summary.shards_total} shards scored, {summary.seconds:.1f} s"
        + (f" ({summary.rows_per_s:,.0f} rows/s)" if summary.rows_per_s else "")
        + (", published" if summary.published else "")
        + (f"; drift above threshold in {', '.join(summary.drifted)}" if summary.drifted else "")
        + (f"; alerts: {', '.join(summary.alerts)}" if summary.alerts else "")
    )


# --- commands -----------------------------------------------------------------------------------


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.db import connection, migrate, resolve_url
    from pipelines.store.roles import API_ROLE, prepare_api_login

    url = resolve_url(settings.database_url, settings.embedded_pgdata)
    applied = migrate(url)
    print(f"schema up to date ({', '.join(applied) if applied else 'nothing to apply'})")
    try:
        with connection(url) as conn:
            _, login = prepare_api_login(conn, settings, url)
    except ConfigError as exc:
        if not settings.api_database_url:
            raise
        # An administrator manages the API's login; the schema is done, so this is only a note.
        print(f"predcache: warning: {exc}", file=sys.stderr)
        return 0
    print(
        f"API login role {API_ROLE}: password from {login.source}; `predcache serve` derives its URL, or set "
        f"PREDCACHE_API_DATABASE_URL=postgresql://{API_ROLE}:<password>@<host>:<port>/<database>"
    )
    return 0


def cmd_data_flights(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.data.flights import write_flights

    rows = write_flights(args.out, start=args.start, end=args.end)
    print(f"wrote {rows} flights to {args.out} (one folder per day: date=YYYY-MM-DD)")
    return 0


def cmd_data_synth(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.data.synth import write_synth

    rows = write_synth(args.out, rows=args.rows)
    print(f"wrote {rows} synthetic flights (real rows under new unique keys) to {args.out}")
    return 0


def cmd_models_build(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.modeling.registry import build_model

    folder = build_model(args.name, settings.models_dir, version=args.version)
    print(f"built {folder}")
    return 0


def cmd_models_import(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.modeling.importer import ImportRequest, import_model, parse_columns

    request = ImportRequest(
        name=args.name,
        onnx=args.onnx,
        key=args.key,
        calibration=args.calibration,
        version=args.version,
        columns=parse_columns(args.columns),
        score=args.score,
        label_column=args.label_column,
        holdout=args.holdout,
        description=args.description or "",
    )
    card, folder = import_model(settings.models_dir, request)
    gate = card.quantization.get("gate", {})
    if args.json:
        summary = card.model_dump(
            mode="json", include={"name", "version", "key", "inputs", "outputs", "score"}
        )
        print(json.dumps({**summary, "path": str(folder), "signatures": card.signatures, "gate": gate}))
    else:
        print(f"imported {card.name}/{card.version} into {folder}")
        print(f"score: {card.score_spec.describe()}; default signature: {card.signature_file()}")
        print(gate.get("reason", ""))
    return 0


def cmd_models_list(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.core.card import load_card
    from pipelines.core.model import list_models, model_versions
    from pipelines.store.cache import cache_url
    from pipelines.store.db import connection
    from pipelines.store.lookup import active_versions

    with connection(cache_url(settings)) as conn:
        active = active_versions(conn)
    for name in sorted(set(list_models(settings.models_dir)) | set(active)):
        versions = model_versions(settings.models_dir, name)
        for version in versions:
            card = load_card(settings.models_dir / name / version)
            is_active = active.get(name) == version
            if args.json:
                entry = {"model": name, "version": version, "active": is_active}
                entry.update(default=card.signature_file(), score=card.score_spec.describe())
                print(json.dumps({**entry, "description": card.description}))
            else:
                mark = "active" if is_active else "-"
                print(f"{name}\t{version}\t{mark}\tdefault={card.signature_file()}\t{card.description}")
        if name in active and active[name] not in versions:
            print(f"{name}\t{active[name]}\tactive\t(not in {settings.models_dir})", file=sys.stderr)
    return 0


def cmd_models_show(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.core.card import load_card
    from pipelines.core.model import resolve_version_dir

    card = load_card(resolve_version_dir(settings.models_dir, args.name, args.version))
    print(json.dumps(card.model_dump(mode="json", exclude={"reference_stats"}), indent=2))
    return 0


def _run_request(args: argparse.Namespace, **overrides: Any) -> Any:
    from pipelines.jobs import RunRequest

    fields: dict[str, Any] = {
        "model": args.model,
        "input": args.input,
        "engine": args.engine,
        "version": args.version,
        "shard_rows": args.shard_rows,
        "publish": args.publish,
        "rerun": getattr(args, "rerun", False),
        "fail_shards": frozenset(getattr(args, "inject_fault", None) or ()),
        "incremental": getattr(args, "incremental", False),
        "prune_missing": getattr(args, "prune_missing", False),
    }
    if getattr(args, "spark_master", None):
        fields["engine_options"] = {"spark_master": args.spark_master}
    fields.update(overrides)
    return RunRequest(**fields)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.jobs import run_job

    bar = _Bar(f"{args.model} {args.input.name}")
    try:
        summary = run_job(settings, _run_request(args), on_progress=bar)
    finally:
        bar.close()
    _print_summary(summary, args.json)
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipelines.backfill import backfill_job, days

    all_days = days(args.start, args.end)
    with tqdm(
        total=len(all_days), desc=f"backfill {args.model}", unit="day", file=sys.stderr, disable=None
    ) as bar:

        def on_day(day: date, summary: Any) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{day} run {summary.run_id} {'skipped' if summary.skipped else 'scored'}")
            if args.json:
                print(json.dumps({"date": day.isoformat(), **summary.to_json()}), flush=True)

        summaries = backfill_job(
            settings,
            model=args.model,
            template=args.input_template,
            start=args.start,
            end=args.end,
            engine=args.engine,
            version=args.version,
            publish_runs=args.publish,
            shard_rows=args.shard_rows,
            engine_options={"spark_master": args.spark_master} if args.spark_master else None,
            on_day=on_day,
        )
    scored = [s for s in summaries if not s.skipped]
    if not args.json:
        print(
            f"backfill {args.start}..{args.end}: {len(scored)} day(s) scored, "
            f"{len(summaries) - len(scored)} skipped "
            f"(already done), {sum(s.rows_out for s in summaries)} predictions, "
            f"{sum(s.rows_rejected for s in summaries)} rejects"
            + "".join(f"\nrun {s.run_id}: drift in {', '.join(s.drifted)}" for s in summaries if s.drifted)
        )
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_connection
    from pipelines.store.publish import publish

    with cache_connection(settings) as conn:
        result = publish(conn, model=args.model, version=args.version, run_ids=args.run or None)
    print(
        f"published {result.model}/{result.version} (publish {result.publish_id}, "
        f"runs {result.run_ids or 'none new'}; "
        f"was {result.prev_version or 'nothing'})"
    )
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_connection
    from pipelines.store.publish import rollback

    with cache_connection(settings) as conn:
        result = rollback(conn, model=args.model)
    print(result.message())
    return 0


def cmd_lookup(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_url
    from pipelines.store.db import connection
    from pipelines.store.lookup import lookup

    with connection(cache_url(settings)) as conn:
        results = lookup(conn, args.model, list(args.keys))
    for item in results:
        if args.json:
            print(json.dumps(item.to_json()))
        elif item.found:
            print(
                f"{item.key}\t{item.score:.6f}\tversion {item.version}\t"
                f"computed {item.computed_at:%Y-%m-%d %H:%M:%S}"
            )
        else:
            print(f"{item.key}\tnot found")
    return 0 if all(item.found for item in results) or args.json else 1


def cmd_runs_list(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_url
    from pipelines.store.db import connection
    from pipelines.store.ledger import list_runs

    with connection(cache_url(settings)) as conn:
        runs = list_runs(conn, model=args.model, limit=args.limit)
    for run in runs:
        if args.json:
            print(json.dumps(run.__dict__, default=str))
        else:
            status = f"{run.status} (stale: owner {run.owner} gone, resumable)" if run.stale else run.status
            print(
                f"{run.run_id}\t{run.model}/{run.version}\t{run.engine}\t{status}\t"
                f"in={run.rows_in} out={run.rows_out} rej={run.rows_rejected}\t{run.input_uri}"
            )
    return 0


def cmd_runs_show(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_url
    from pipelines.store.db import connection
    from pipelines.store.ledger import get_run, progress, reject_reasons
    from pipelines.store.runstate import events

    with connection(cache_url(settings)) as conn:
        run = get_run(conn, args.run_id)
        p = progress(conn, args.run_id)
        reasons = reject_reasons(conn, args.run_id)
        history = events(conn, args.run_id)
    info = {
        **{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in run.__dict__.items()},
        "shards_done": p.shards_done,
        "shards_total": p.shards_total,
        "reject_reasons": dict(reasons),
        "events": history,
    }
    print(json.dumps(info, indent=None if args.json else 2))
    return 0


def cmd_gc(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.store.cache import cache_url
    from pipelines.store.db import connection
    from pipelines.store.retention import collect_garbage

    with connection(cache_url(settings), autocommit=True) as conn:
        result = collect_garbage(
            conn,
            model=args.model,
            keep_versions=args.keep_versions if args.keep_versions is not None else settings.gc_keep_versions,
            keep_days=args.keep_days if args.keep_days is not None else settings.gc_keep_days,
            dry_run=args.dry_run,
        )
    if args.json:
        print(json.dumps({**result.__dict__, "runs": [run.__dict__ for run in result.runs]}))
    else:
        print(result.summary())
    return 0


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def cmd_labels_load(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.monitoring.labels import load_labels

    done = load_labels(
        settings, model=args.model, source=args.input, key=args.key, label=args.label, as_of=args.as_of
    )
    if args.json:
        print(json.dumps(done.to_json()))
    else:
        print(
            f"labels of {done.model}: {done.rows} rows, {done.inserted} new, {done.updated} changed, "
            f"{done.unchanged} unchanged, {done.null_labels} null (outcome unknown), "
            f"{done.unpredicted} for keys never predicted (kept)"
        )
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.monitoring.alerts import check_evaluations
    from pipelines.monitoring.evaluate import evaluate

    result = evaluate(settings, model=args.model, since=args.since, until=args.until)
    alerts = check_evaluations(settings, args.model)
    if args.json:
        print(json.dumps({**result.to_json(), "alerts": [a.subject for a in alerts]}, default=str))
        return 0
    for week in result.scope("week"):
        shown = ", ".join(
            f"{name} {value:.4f}" for name, value in week.metrics.items() if isinstance(value, float)
        )
        coverage = f"{week.coverage:.1%}" if week.coverage is not None else "n/a"
        print(f"week {week.scope_key}: {week.matched} labelled predictions ({coverage} of labels)  {shown}")
    runs = len(result.scope("run"))
    print(
        f"evaluated {result.model} ({result.task}): {runs} run(s), {len(result.scope('day'))} day(s) "
        f"in {result.seconds:.2f} s; {len(alerts)} metric alert(s) fired"
    )
    return 0


def cmd_alerts_check(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.monitoring.alerts import check_evaluations, check_staleness

    fired = check_staleness(settings, args.model) + check_evaluations(settings, args.model)
    for alert in fired:
        print(f"{alert.model}\t{alert.condition}\t{alert.subject}\tdelivered={alert.delivered}")
    print(f"{len(fired)} new alert(s) for {args.model}")
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.monitoring.report import write_report

    path = write_report(settings, model=args.model, out_dir=args.out)
    print(f"wrote {path}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.api.server import serve

    if settings.database_url is None and settings.api_database_url is None:
        # Zero set-up with the embedded server: migrate it here, as its owner, like every other
        # command. The API process itself never changes the schema (it only checks it).
        from pipelines.store.cache import cache_url

        cache_url(settings)
    serve(
        settings, host=args.host, port=args.port, workers=args.workers, allow_anonymous=args.allow_anonymous
    )
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    run_demo(settings, engine=args.engine, data_dir=args.data_dir)
    return 0


def cmd_airflow(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.airflow_local import run_until_interrupted

    run_until_interrupted(settings, port=args.port, data_dir=args.data_dir)
    return 0


# --- parser -------------------------------------------------------------------------------------


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name (see `predcache models list`)")
    parser.add_argument("--engine", choices=("beam", "spark"), default="beam", help="execution engine")
    parser.add_argument("--version", help="model version (default: the newest)")
    parser.add_argument(
        "--shard-rows", type=_positive, help="max rows per shard (default: PREDCACHE_SHARD_ROWS)"
    )
    parser.add_argument("--publish", action="store_true", help="publish the run(s) once verified")
    parser.add_argument(
        "--spark-master", help="Spark master URL (default: PREDCACHE_SPARK_MASTER or local[*])"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predcache", description="Batch keyed predictions into a PostgreSQL cache."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[Settings, argparse.Namespace], int], help_text: str, where: Any = sub
    ) -> Any:
        p = where.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    demo = add("demo", cmd_demo, "end to end on the reference model: data, score a day, publish, look up")
    demo.add_argument("--engine", choices=("beam", "spark"), default="beam")
    demo.add_argument(
        "--data-dir", type=Path, help="where the flights data goes (default: PREDCACHE_HOME/data)"
    )

    db = sub.add_parser("db", help="database commands").add_subparsers(
        dest="db_command", required=True, metavar="CMD"
    )
    add("migrate", cmd_db_migrate, "create or update the cache schema (idempotent)", db)

    data = sub.add_parser("data", help="data sets").add_subparsers(
        dest="data_command", required=True, metavar="CMD"
    )
    flights = add(
        "flights", cmd_data_flights, "write the real 2013 NYC flights (+ weather) as Parquet by day", data
    )
    flights.add_argument("--out", type=Path, required=True, help="output folder")
    flights.add_argument("--start", type=_date, help="first day (default 2013-01-01)")
    flights.add_argument("--end", type=_date, help="last day (default 2013-12-31)")

    synth = add("synth", cmd_data_synth, "the real flights replicated under new unique keys (scale)", data)
    synth.add_argument("--rows", type=_positive, required=True, help="rows to write (e.g. 1000000)")
    synth.add_argument("--out", type=Path, required=True, help="output folder (partitioned by day)")

    models = sub.add_parser("models", help="model commands").add_subparsers(
        dest="models_command", required=True, metavar="CMD"
    )
    build = add("build", cmd_models_build, "train, export and quantize a model from its recipe", models)
    build.add_argument("name")
    build.add_argument("--version", default="1")
    imp = add("import", cmd_models_import, "import an exported ONNX model as a new, gated version", models)
    imp.add_argument("name", help="model name: a lowercase letter, then lowercase letters, digits, _")
    imp.add_argument("--onnx", type=Path, required=True, help="the exported ONNX file")
    imp.add_argument("--key", required=True, help="key column (string, int32 or int64)")
    imp.add_argument("--calibration", type=Path, required=True, help="Parquet file of valid input rows")
    imp.add_argument("--version", help="version to write (default: the next integer); never overwritten")
    imp.add_argument(
        "--columns", action="append", metavar="INPUT=C1,C2", help="columns stacked into an [N, K] input"
    )
    imp.add_argument("--score", metavar="OUTPUT[:INDEX|:max]", help="the output (element) that is the score")
    imp.add_argument("--label-column", help="column of true labels: adds the task metric to the gate")
    imp.add_argument(
        "--holdout", type=Path, help="Parquet rows for the gate (default: held-out calibration rows)"
    )
    imp.add_argument("--description", help="one sentence on what the model predicts")
    imp.add_argument("--json", action="store_true", help="print the imported card's summary as JSON")
    ml = add("list", cmd_models_list, "list model versions and which one each model serves (active)", models)
    ml.add_argument("--json", action="store_true", help="one JSON object per model version and line")
    show = add("show", cmd_models_show, "print a model card", models)
    show.add_argument("name")
    show.add_argument("--version")

    run = add("run", cmd_run, "score one input (Parquet file or folder) into the cache")
    run.add_argument("--input", type=Path, required=True, help="Parquet file or folder")
    _add_run_options(run)
    run.add_argument("--rerun", action="store_true", help="score again even if this input was already done")
    run.add_argument(
        "--incremental",
        action="store_true",
        help="rescore only new keys and keys whose inputs changed since their current prediction",
    )
    run.add_argument(
        "--prune-missing",
        action="store_true",
        help="with --incremental: hide current keys that the input no longer contains (from its publish on)",
    )
    run.add_argument("--inject-fault", action="append", metavar="SHARD_ID", help=argparse.SUPPRESS)

    backfill = add("backfill", cmd_backfill, "score a range of days, one run per day; resumable")
    backfill.add_argument("--input-template", required=True, help="path with {date}, e.g. 'data/date={date}'")
    backfill.add_argument("--start", type=_date, required=True)
    backfill.add_argument("--end", type=_date, required=True)
    _add_run_options(backfill)

    pub = add("publish", cmd_publish, "make a version active and publish its verified runs")
    pub.add_argument("--model", required=True)
    pub.add_argument("--version", required=True)
    pub.add_argument(
        "--run",
        type=int,
        action="append",
        metavar="RUN_ID",
        help="publish only this run (repeatable); the way to bring back a rolled-back run",
    )
    rb = add("rollback", cmd_rollback, "undo the newest publish of a model")
    rb.add_argument("--model", required=True)

    lk = add("lookup", cmd_lookup, "current predictions for keys")
    lk.add_argument("--model", required=True)
    lk.add_argument("--json", action="store_true", help="one JSON object per key and line")
    lk.add_argument("keys", nargs="+", metavar="KEY")

    runs = sub.add_parser("runs", help="the run ledger").add_subparsers(
        dest="runs_command", required=True, metavar="CMD"
    )
    rl = add("list", cmd_runs_list, "newest runs first", runs)
    rl.add_argument("--model")
    rl.add_argument("--limit", type=_positive, default=20)
    rl.add_argument("--json", action="store_true")
    rs = add("show", cmd_runs_show, "one run with its shard progress and reject reasons", runs)
    rs.add_argument("run_id", type=int)
    rs.add_argument("--json", action="store_true")

    gc = add("gc", cmd_gc, "delete unpublished, failed and superseded runs; drop old versions' partitions")
    gc.add_argument("--model", help="only this model (default: every model)")
    gc.add_argument(
        "--keep-versions",
        type=_positive,
        help="newest versions kept per model (default: PREDCACHE_GC_KEEP_VERSIONS)",
    )
    gc.add_argument(
        "--keep-days", type=_non_negative, help="rollback window in days (default: PREDCACHE_GC_KEEP_DAYS)"
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    gc.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")

    labels = sub.add_parser("labels", help="ground truth that arrives late").add_subparsers(
        dest="labels_command", required=True, metavar="CMD"
    )
    ll = add("load", cmd_labels_load, "load outcomes per key (COPY + one merge; idempotent)", labels)
    ll.add_argument("--model", required=True)
    ll.add_argument("--input", type=Path, required=True, help="Parquet file/folder (hive ok) or CSV file")
    ll.add_argument("--key", required=True, help="column holding the prediction key")
    ll.add_argument("--label", required=True, help="column holding the outcome (0/1 for binary models)")
    ll.add_argument("--as-of", help="when the outcomes were known, ISO 8601 (default: now)")
    ll.add_argument("--json", action="store_true")

    ev = add("evaluate", cmd_evaluate, "realised metrics of the served predictions, per run, day and week")
    ev.add_argument("--model", required=True)
    ev.add_argument("--since", type=_date, help="first day of labels (default: all)")
    ev.add_argument("--until", type=_date, help="last day of labels (default: all)")
    ev.add_argument("--json", action="store_true")

    alerts = sub.add_parser("alerts", help="monitoring alerts").add_subparsers(
        dest="alerts_command", required=True, metavar="CMD"
    )
    ac = add(
        "check", cmd_alerts_check, "staleness and realised-metric alerts (webhook once per condition)", alerts
    )
    ac.add_argument("--model", required=True)

    rp = add("report", cmd_report, "write the model's self-contained HTML monitoring report")
    rp.add_argument("--model", required=True)
    rp.add_argument("--out", type=Path, required=True, help="output folder (report.html goes there)")

    sv = add("serve", cmd_serve, "serve the HTTP lookup API (read-only)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_positive, default=8000)
    sv.add_argument("--workers", type=_positive, default=1)
    sv.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback --host without PREDCACHE_API_KEYS (then anyone may read predictions)",
    )

    af = add("airflow", cmd_airflow, "a local Airflow with the predcache DAGs on this cache, until Ctrl-C")
    af.add_argument("--port", type=_positive, help="UI/API port on 127.0.0.1 (default: a free one)")
    af.add_argument(
        "--data-dir",
        type=Path,
        help="day-partitioned flights for the DAG (default: PREDCACHE_HOME/data/flights)",
    )
    return parser


def _configure_logging(debug: bool) -> None:
    """Our warnings on stderr; engines' chatter (Beam logs to the root logger) only with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pipelines").setLevel(logging.DEBUG if debug else logging.WARNING)


def _is_driver_error(exc: BaseException) -> bool:
    """An error of the database drivers (not imported here: the CLI starts without them)."""
    return any(t.__module__.split(".")[0] in ("psycopg", "asyncpg") for t in type(exc).__mro__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.debug)
    try:
        try:
            settings = Settings()
        except Exception as exc:  # pydantic's ValidationError: report the first problem
            raise ConfigError(f"invalid PREDCACHE_* setting: {' '.join(str(exc).split())[:300]}") from exc
        return int(args.handler(settings, args))
    except PredcacheError as exc:
        if args.debug:
            raise
        print(f"predcache: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if args.debug or not _is_driver_error(exc):
            raise
        detail = flat_message(exc, limit=300)
        print(
            f"predcache: error: database error ({detail}); check that PostgreSQL is up, "
            "then rerun the same command (runs resume)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("predcache: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
