"""One Optuna study, two worker processes, a real PostgreSQL server; one worker killed mid-trial.

The server starts from Debian's ``postgresql`` package (``.ci/run`` installs
it). Without it the test skips outside CI and fails in CI (``CI=true``).
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from skgnn.tuning import open_study

from .postgres_server import in_ci, postgres_bin, running_server
from .study_worker import GRACE_PERIOD, HEARTBEAT_INTERVAL, PAUSE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def postgres_url():
    missing = None
    if postgres_bin() is None:
        missing = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
    else:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            missing = "psycopg2 is not installed (pip install -e '.[test]')"
    if missing:
        if in_ci():
            pytest.fail(f"{missing}; CI must run this test.")
        pytest.skip(missing)
    with running_server() as url:
        yield url


def study_worker(url: str, study: str, n_trials: int, barrier: Path, name: str, *hang_in: int):
    command = [sys.executable, "-m", "tests.study_worker", url, study, str(n_trials),
               str(barrier), "2", name, *map(str, hang_in)]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, workers: list, timeout: float = 180) -> str:
    deadline = time.time() + timeout
    while not path.exists():
        for worker in workers:
            if worker.poll() is not None:
                raise AssertionError(f"a worker ended early:\n{worker.stderr.read()[-3000:]}")
        if time.time() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)
    time.sleep(0.05)  # the number is written just after the file appears
    return path.read_text()


def test_server_answers(postgres_url):
    study = open_study("ping", postgres_url)
    assert study.study_name == "ping" and study.trials == []


def test_two_workers_lose_no_trial_when_one_is_killed_mid_trial(postgres_url, tmp_path):
    """Worker a is SIGKILLed inside its second trial; b marks that trial failed and reruns it.

    Each trial takes at least 2 x PAUSE s, so b still starts trials more than
    the heartbeat's grace period after the kill: it is b that finds a's trial
    stale (Optuna checks at each trial start) and runs the retry.
    """
    n_trials = 16
    assert (n_trials - 4) * 2 * PAUSE > GRACE_PERIOD + HEARTBEAT_INTERVAL  # margin, as above
    a = study_worker(postgres_url, "killed", n_trials, tmp_path, "a", 2)
    b = study_worker(postgres_url, "killed", n_trials, tmp_path, "b")
    try:
        killed = int(wait_for(tmp_path / "a.hung", [a, b]))
        a.send_signal(signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
        _, stderr = b.communicate(timeout=180)
        assert b.returncode == 0, stderr[-3000:]
    finally:
        for worker in (a, b):
            worker.kill()
            worker.wait()

    study = optuna.load_study(study_name="killed", storage=postgres_url)
    states = [t.state for t in study.trials]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials  # the trials add up
    assert [t.number for t in study.trials if t.state == TrialState.FAIL] == [killed]
    assert states.count(TrialState.RUNNING) == states.count(TrialState.WAITING) == 0
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].params == study.trials[killed].params
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # a finished one before dying
