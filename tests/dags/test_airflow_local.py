"""`predcache airflow` (`make airflow`) as a person uses it: start it, run a day, look at the grid, Ctrl-C.

The trial runs as a user starts it (``python -m pipelines.cli airflow`` in its own session, with
its own ``PREDCACHE_HOME``: Airflow home, embedded cache and the day's flights inside). The day is
triggered through the REST API v2 with a token from ``/auth/token``, and the DAG's grid is opened
in Debian's headless Chromium (driven by Playwright, which downloads no browser), logged in
through the login form with the password the trial printed. The screenshot is kept in the test's
``tmp_path`` and copied to ``benchmarks/out/airflow_grid.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import psutil
import pytest

from pipelines.airflow_local import AirflowError, _only_trial, airflow_env, free_port, prepare_data
from pipelines.resources import dags_dir

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "batch_predict_flights_delay"
TASKS = ("check_input", "plan", "score", "verify", "publish", "observe")
DAY = "2013-07-01"
RUN_ID = f"trial__{DAY}"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = REPO / "benchmarks" / "out" / "airflow_grid.png"
START_SECONDS = 300.0
RUN_SECONDS = 300.0
STOP_SECONDS = 90.0
PAGE_TIMEOUT_MS = 60_000


class Trial:
    """One ``predcache airflow`` process: started on demand, its banner parsed, stopped like Ctrl-C."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.log = home / "trial.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = self.user = self.password = ""
        #: Every process seen once the trial was up: found again even if the trial itself died.
        self.seen: list[psutil.Process] = []

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def ensure_running(self) -> Trial:
        if self.proc is not None and self.proc.poll() is None:
            return self
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "airflow"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while "Press Ctrl-C to stop." not in self.output():
            assert self.proc.poll() is None, f"`predcache airflow` exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"`predcache airflow` not up:\n{self.output()[-3000:]}"
            time.sleep(1)
        banner = self.output()
        ui = re.search(r"UI:\s+(http://127\.0\.0\.1:\d+)/dags/", banner)
        login = re.search(r"login:\s+(\S+) / (\S+)", banner)
        assert ui and login, banner
        self.url, self.user, self.password = ui.group(1), login.group(1), login.group(2)
        self.seen += self.processes()
        return self

    def processes(self) -> list[psutil.Process]:
        """This process, everything it started, and the embedded PostgreSQL of its home."""
        found: list[psutil.Process] = []
        if self.proc is not None:
            with suppress(psutil.NoSuchProcess):
                root = psutil.Process(self.proc.pid)
                found += [root, *root.children(recursive=True)]
        pgdata = str(self.home / "pg")
        for proc in psutil.process_iter(["cmdline"]):
            if pgdata in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        return found

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the trial process only (its components run in sessions of their own)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=STOP_SECONDS)

    def kill_all(self) -> None:
        """Whatever is left (a failed test): interrupt, then kill the whole tree and the embedded server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_SECONDS)
        left: dict[int, psutil.Process] = {}
        for proc in [*self.seen, *self.processes()]:
            with suppress(psutil.NoSuchProcess):
                if proc.is_running():
                    left |= {p.pid: p for p in [proc, *proc.children(recursive=True)]}
        for proc in left.values():
            with suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(list(left.values()), timeout=10)
        if self.proc is not None:
            self.proc.wait()


def _still_running(procs: list[psutil.Process]) -> list[str]:
    """The processes of ``procs`` still alive (a zombie has ended: only its exit status waits)."""
    alive = []
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
    return alive


@pytest.fixture(scope="module")
def trial(flights_models_dir: Path) -> Iterator[Trial]:
    """A ``predcache airflow`` over a fresh PREDCACHE_HOME holding one day of flights (started on first use).

    The home lives outside pytest's basetemp, which concurrent pytest sessions prune.
    """
    from datetime import date

    from pipelines.data.flights import write_flights

    home = Path(tempfile.mkdtemp(prefix="predcache-airflow-"))
    write_flights(home / "data" / "flights", start=date.fromisoformat(DAY), end=date.fromisoformat(DAY))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDCACHE_", "AIRFLOW"))}
    env.update(PREDCACHE_HOME=str(home), PREDCACHE_MODELS_DIR=str(flights_models_dir))
    running = Trial(home, env)
    try:
        yield running
    finally:
        running.kill_all()
        shutil.rmtree(home, ignore_errors=True)


def _api(trial: Trial) -> httpx.Client:
    token = httpx.post(
        f"{trial.url}/auth/token", json={"username": trial.user, "password": trial.password}, timeout=30
    )
    assert token.status_code == 201, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=f"{trial.url}/api/v2", headers=headers, timeout=30)


def _run_day(trial: Trial) -> str:
    """Trigger the DAG for DAY through the REST API and wait for the run to finish; its final state."""
    with _api(trial) as api:
        deadline = time.monotonic() + START_SECONDS
        while api.get(f"/dags/{DAG_ID}").status_code != 200:
            assert time.monotonic() < deadline, f"{DAG_ID} never parsed:\n{trial.output()[-2000:]}"
            time.sleep(2)
        body = {"dag_run_id": RUN_ID, "logical_date": f"{DAY}T00:00:00Z", "conf": {}}
        triggered = api.post(f"/dags/{DAG_ID}/dagRuns", json=body)
        assert triggered.status_code in (200, 409), triggered.text  # 409: already run by this module
        deadline = time.monotonic() + RUN_SECONDS
        state = ""
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"run {RUN_ID} still {state} after {RUN_SECONDS:.0f} s"
            time.sleep(2)
            state = api.get(f"/dags/{DAG_ID}/dagRuns/{RUN_ID}").json()["state"]
        if state != "success":
            tis = api.get(f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances").json()["task_instances"]
            pytest.fail(f"run {RUN_ID} {state}: {[(t['task_id'], t['state']) for t in tis]}")
        return state


def _grid_screenshot(trial: Trial, out: Path) -> dict[str, object]:
    """Log in through the form, open the DAG's grid, hover the run's last task; what the page shows."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `apt-get install -y chromium` (Debian's package; .ci/run does it)"
        )
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="predcache-chromium-"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900},
            )
            try:
                page = browser.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.goto(f"{trial.url}/dags/{DAG_ID}")
                page.get_by_label("Username").fill(trial.user)
                page.get_by_label("Password").fill(trial.password)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}$"))
                latest = page.locator(f'a[href="/dags/{DAG_ID}/runs/{RUN_ID}"] [data-testid="state-badge"]')
                cells = [page.get_by_test_id(f"grid-{RUN_ID}-{task}") for task in TASKS]
                for cell in cells:
                    cell.wait_for()
                cells[-1].hover()
                tooltip = page.locator('[data-part="content"]', has_text=f"Run ID: {RUN_ID}")
                tooltip.wait_for()
                page.screenshot(path=str(out))
                return {
                    "latest_run_state": latest.get_attribute("aria-label"),
                    "tooltip": tooltip.inner_text(),
                }
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.airflow
@pytest.mark.slow
def test_a_day_triggered_through_the_api_shows_as_successful_in_the_grid(
    trial: Trial, tmp_path: Path
) -> None:
    _run_day(trial.ensure_running())
    screenshot = tmp_path / "airflow_grid.png"
    seen = _grid_screenshot(trial, screenshot)
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, SCREENSHOT_COPY)
    assert seen["latest_run_state"] == "success"
    assert "State: Success" in str(seen["tooltip"]), seen["tooltip"]


@pytest.mark.airflow
@pytest.mark.slow
def test_ctrl_c_stops_airflow_and_everything_it_started(trial: Trial) -> None:
    started = trial.ensure_running().processes()
    assert len(started) >= 5  # the trial, API server, scheduler, DAG processor, triggerer (+ PostgreSQL)

    code = trial.interrupt()

    assert code == 0, trial.output()[-3000:]
    assert trial.output().rstrip().endswith("Airflow stopped.")
    assert _still_running(started) == []


def test_the_trial_binds_loopback_and_wires_its_home_dags_and_cache(tmp_path: Path) -> None:
    env = airflow_env(
        airflow_home=tmp_path / "airflow", port=8123, cache_url="postgresql://x", data_dir=tmp_path
    )
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "8123")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(dags_dir())
    assert (env["PREDCACHE_DATABASE_URL"], env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"]) == (
        "postgresql://x",
        "False",
    )


def test_a_parallelism_the_user_set_wins_over_the_trials_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "7")
    env = airflow_env(airflow_home=tmp_path, port=8123, cache_url="postgresql://x", data_dir=tmp_path)
    assert env["AIRFLOW__CORE__PARALLELISM"] == "7"


def test_data_already_holding_days_is_not_written_again(tmp_path: Path) -> None:
    (tmp_path / f"date={DAY}").mkdir()
    assert prepare_data(tmp_path) == 0
    assert [p.name for p in tmp_path.iterdir()] == [f"date={DAY}"]


def test_a_second_trial_on_the_same_home_is_refused(tmp_path: Path) -> None:
    with _only_trial(tmp_path), pytest.raises(AirflowError, match="already runs"), _only_trial(tmp_path):
        pass


def test_free_port_is_bindable_on_loopback() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
