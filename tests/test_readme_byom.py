"""README "Bring your own model": its code blocks, run verbatim, import, score, and serve the model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, subprocess_env

pytestmark = pytest.mark.slow


def _blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_readme_example_runs_verbatim(migrated_url: str, tmp_path: Path) -> None:
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "bash", "sql", "bash"]
    bin_dir = str(Path(sys.executable).parent)
    env = subprocess_env(migrated_url, tmp_path / "home", PREDCACHE_MODELS_DIR=str(tmp_path / "models"))
    env["PATH"] = bin_dir + ":" + env.get("PATH", "")
    outputs = []
    for lang, code in blocks:
        if lang == "python":
            subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=300)
        elif lang == "bash":
            done = subprocess.run(
                ["bash", "-e", "-c", code],
                cwd=tmp_path,
                env=env,
                check=True,
                timeout=600,
                capture_output=True,
                text=True,
            )
            outputs.append(done.stdout)
        else:
            with psycopg.connect(migrated_url) as conn:
                row = conn.execute(code).fetchone()
            assert (
                row is not None and row[0] == "42" and set(row[3]) == {"output_label", "output_probability"}
            )
    looked_up = json.loads(outputs[0].strip().splitlines()[-1])
    assert looked_up["found"] and len(looked_up["outputs"]["output_probability"]) == 2
    single, batch = (json.loads(line) for line in outputs[1].strip().splitlines())
    assert row is not None and single["outputs"] == looked_up["outputs"] == row[3]
    assert [r["status"] for r in batch["results"]] == ["FOUND", "FOUND"]
