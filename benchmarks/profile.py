"""Where the time of `predcache run` goes: py-spy samples of the whole process tree, grouped by stage.

    python -m benchmarks.profile --input DIR --engine beam [--database-url URL] [--rate 50]

Runs the CLI under ``py-spy record --subprocesses`` (Python frames only: the JVM of Spark is not
sampled, its Python workers are), then attributes every sample to the innermost stage it is in
(``STAGES``, matched on frames from the leaf up) and prints, per stage, its share of all samples and
its top functions. Samples of threads waiting on a lock, queue or child (``waiting``) are counted
and left out of the shares.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import MACHINE_PG_URL, MODEL, drop_database, fresh_database

#: (stage, frame patterns): a sample belongs to the first stage, from the leaf up, whose pattern matches.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model: onnxruntime run", ("Session.run ",)),
    ("model: to_feed", ("to_feed ", "_strings ")),
    ("validate", ("validate (pipelines/core/validate", "_reject_rows ")),
    ("write: csv encode", ("_csv_bytes ",)),
    ("write: binary encode", ("encode (pipelines/store/binary_copy",)),
    ("scratch: write pieces", ("write_piece ",)),
    ("scratch: read + delete pieces", ("read_pieces ", "delete_pieces ")),
    ("write: COPY + commit", ("write_shard ",)),
    ("plan: key hashes", ("key_hashes ", "plan_shards ")),
    ("split by shard", ("split_by_shard ",)),
    ("read parquet", ("iter_tables ", "read_table ", "ParquetFile", "_open (pipelines/core/inputs")),
    ("verify + index + publish", ("verify_run ", "publish_run ", "attach_partition ")),
    ("engine: pickling/coders", ("pickler", "coders", "cloudpickle", "serializers.py", "_pickle")),
    ("engine: grpc/data plane", ("grpc", "data_plane")),
    ("start-up: imports", ("_find_and_load", "exec_module")),
    # pyspark's daemon idles in a select loop in "manager"; its forked workers match deeper stages first.
    (
        "waiting",
        ("Condition.wait", "Event.wait", "_try_wait", "select ", "poll ", "Connection.wait", "manager ("),
    ),
)


def _normalise(frame: str) -> str:
    return re.sub(r"\(.*?/(?:site-packages|lib/python3\.\d+|main)/", "(", frame)


def summarize(raw: Path, *, top: int = 6) -> str:
    """A plain-text table of stages and their top functions from py-spy's raw (collapsed) output."""
    by_stage: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_normalise(f) for f in stack.split(";") if not f.startswith("process ")]
        stage = "other"
        for frame in reversed(frames):
            found = next((name for name, pats in STAGES if any(p in frame for p in pats)), None)
            if found:
                stage = found
                break
        by_stage[stage] += n
        ours = [f for f in frames if "(pipelines/" in f]
        leaves[stage][(ours[-1] if ours else frames[-1] if frames else "?")[:110]] += n
    waiting = by_stage.pop("waiting", 0)
    busy = max(1, total - waiting)
    lines = [f"{total} samples, {waiting} of them waiting (left out); shares of the {busy} busy samples:"]
    for stage, n in by_stage.most_common():
        lines.append(f"{100 * n / busy:5.1f}%  {stage}")
        for leaf, m in leaves[stage].most_common(top):
            lines.append(f"          {100 * m / busy:5.1f}%  {leaf}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--engine", choices=("beam", "spark"), default="beam")
    parser.add_argument("--database-url", default=os.environ.get("PREDCACHE_DATABASE_URL") or MACHINE_PG_URL)
    parser.add_argument("--rate", type=int, default=50, help="samples per second per process")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    url = fresh_database(args.database_url, "profile")
    with tempfile.TemporaryDirectory(prefix="predcache-profile-") as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCACHE_")}
        env.update(PREDCACHE_DATABASE_URL=url, PREDCACHE_HOME=str(Path(tmp) / "home"))
        command = [
            spy,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            str(args.rate),
            "-o",
            str(raw),
        ]
        command += ["--", sys.executable, "-m", "pipelines.cli", "run", "--model", MODEL]
        command += ["--input", str(args.input), "--engine", args.engine, "--publish", "--json"]
        try:
            subprocess.run(command, env=env, check=True, stdout=sys.stderr)
        finally:
            drop_database(args.database_url, url)
        print(summarize(raw))


if __name__ == "__main__":
    main()
