"""The Matbench head-to-head harness (benchmarks/matbench.py) on a tiny subsample of jdft2d."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import matbench
from skgnn.baselines import make_rf_scm_magpie
from skgnn.model_selection import MatbenchKFold

from .conftest import MATBENCH

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--subsample", "60", "--folds", "0", "--max-epochs", "2", "--n-estimators", "10",
        "--models", "cgcnn,rf_scm_magpie", "--data-home", str(MATBENCH)]  # fmt: skip
MODELS = ("cgcnn", "rf_scm_magpie")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matbench")
    matbench.main([*TINY, "--learning-curve", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def fold0():
    """The subsampled data and fold 0's rows, as the harness splits them."""
    X, y, _ = matbench.load_task("matbench_jdft2d", str(MATBENCH), "60")
    train, test = next(MatbenchKFold().split(y))
    return X, y, train, test


def test_run_writes_sane_results(tiny_run, fold0):
    out, results = tiny_run
    _, y, train, test = fold0
    for name in ["learning_curve.png"] + [f"parity_{model}.png" for model in MODELS]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    assert results["data"]["subsample"] == "60" and results["data"]["n_rows"] == 60
    assert "torch" in results["machine"]["packages"]
    for model in MODELS:
        record = results["models"][model]["folds"]["0"]
        assert (record["n_train"], record["n_test"]) == (len(train), len(test))
        assert 0 < record["mae"] <= record["rmse"] and record["r2"] <= 1
        assert record["fit_s"] > 0 and record["predict_s"] > 0 and record["peak_rss_mb"] > 0
        assert record["y_true"] == pytest.approx(y[test].tolist())
        assert np.mean(np.abs(np.subtract(record["y_true"], record["y_pred"]))) == pytest.approx(
            record["mae"]
        )
        assert results["models"][model]["summary"]["mae_mean"] == pytest.approx(record["mae"])
        points = results["learning_curve"][model]["points"]
        assert [p["n_train"] for p in points] == [5, 12, 24, 48]
        assert points[-1]["mae"] == record["mae"]  # 100 % of fold 0's training rows is fold 0
    assert results["models"]["cgcnn"]["folds"]["0"]["params"]["cgcnnregressor__max_epochs"] == "2"
    markdown = (out / "results.md").read_text()
    assert "Quick look: 60 rows subsampled" in markdown
    assert "| rf_scm_magpie | 1 |" in markdown
    assert "| CGCNN (Matbench leaderboard) | 5 | 49.24" in markdown


def test_rerun_skips_finished_folds(tiny_run, tmp_path, monkeypatch):
    out, before = tiny_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    fitted = []
    real_run_fold = matbench.run_fold

    def spy(estimator, *args):
        fitted.append(type(estimator.steps[-1][1]).__name__)
        return real_run_fold(estimator, *args)

    monkeypatch.setattr(matbench, "run_fold", spy)
    after = matbench.main([*TINY, "--learning-curve", "--out", str(tmp_path)])
    assert fitted == []
    for model in MODELS:
        assert after["models"][model]["folds"] == before["models"][model]["folds"]
    # other CGCNN settings: only CGCNN's fold (and learning curve) run again
    matbench.main([*TINY, "--max-epochs", "1", "--out", str(tmp_path)])
    assert fitted == ["CGCNNRegressor"]


def test_processes_running_other_folds_keep_each_others_folds(tmp_path, monkeypatch):
    """Two processes on one folder: the one that writes last keeps the other's fold."""
    quick = [*TINY, "--models", "rf_scm_magpie"]
    other = tmp_path / "other"
    matbench.main([*quick, "--out", str(other)])  # the other process's fold 0, stored ...
    real_run_fold = matbench.run_fold

    def fold_while_the_other_finishes(*args):
        result = real_run_fold(*args)
        shutil.copy(other / "results.json", tmp_path / "results.json")  # ... meanwhile
        return result

    monkeypatch.setattr(matbench, "run_fold", fold_while_the_other_finishes)
    matbench.main([*quick, "--folds", "1", "--out", str(tmp_path)])
    stored = json.loads((tmp_path / "results.json").read_text())
    folds = stored["models"]["rf_scm_magpie"]["folds"]
    assert sorted(folds) == ["0", "1"]
    assert stored["models"]["rf_scm_magpie"]["summary"]["n_folds"] == 2
    first = json.loads((other / "results.json").read_text())["models"]["rf_scm_magpie"]
    assert folds["0"] == first["folds"]["0"]


def test_a_stored_fold_with_other_settings_is_not_taken_in(tiny_run):
    _, stored = tiny_run
    fold = stored["models"]["cgcnn"]["folds"]["0"]
    results = {"data": stored["data"], "models": {}, "learning_curve": {}}
    other_epochs = {**fold["params"], "cgcnnregressor__max_epochs": "1"}
    matbench.merge_finished_folds(results, stored, {"cgcnn": {"0": other_epochs}})
    assert results["models"]["cgcnn"]["folds"] == {}
    assert (
        results["models"]["rf_scm_magpie"]["folds"]["0"]
        == stored["models"]["rf_scm_magpie"]["folds"]["0"]
    )
    assert results["learning_curve"] == stored["learning_curve"]
    elsewhere = {**results, "data": {**stored["data"], "n_rows": 61}, "models": {}}
    matbench.merge_finished_folds(elsewhere, stored, {})
    assert elsewhere["models"] == {}


def test_fold_fit_sees_training_rows_only(fold0):
    X, y, train, test = fold0
    args = matbench.parse_args(TINY)
    _, fitted = matbench.run_fold(matbench.MODELS["cgcnn"](args, 0), X, y, train, test)
    assert fitted[-1].target_mean_ == pytest.approx(y[train].mean())
    assert fitted[-1].target_mean_ != pytest.approx(y.mean())


def test_rf_nan_columns_chosen_on_training_rows(fold0):
    X, y, train, test = fold0
    # a test cell bigger than any training cell: a featurizer fitted on it would pad the
    # sine Coulomb matrix to its size, so the column count gives a leak away
    cells = X.to_numpy(copy=True)
    cells[test[0]] = cells[test[0]] * (2, 2, 2)
    X = pd.Series(cells)
    args = matbench.parse_args(TINY)
    _, fitted = matbench.run_fold(matbench.MODELS["rf_scm_magpie"](args, 0), X, y, train, test)
    train_only = make_rf_scm_magpie(10, random_state=0).fit(X.iloc[train], y[train])
    all_rows = make_rf_scm_magpie(10, random_state=0).fit(X, y)
    support = fitted["drop_nan"].get_support()
    np.testing.assert_array_equal(support, train_only["drop_nan"].get_support())
    assert len(support) != len(all_rows["drop_nan"].get_support())


def test_unknown_model_is_refused(capsys):
    with pytest.raises(SystemExit):
        matbench.parse_args(["--models", "cgcnn,nope"])
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("folds", ["0,5", "0,one", "-1"])
def test_folds_outside_the_official_five_are_refused(capsys, folds):
    with pytest.raises(SystemExit):
        matbench.parse_args(["--folds", folds])
    assert f"--folds must be among 0,1,2,3,4; got '{folds}'" in capsys.readouterr().err


def test_matbench_records_the_folds_and_keeps_an_unchanged_record_as_it_is(tmp_path):
    pytest.importorskip("matbench")  # installed for benchmark runs only (pip install --no-deps)
    from matbench.bench import MatbenchBenchmark

    task = "matbench_jdft2d"
    _, y, _ = matbench.load_task(task, str(MATBENCH))
    splits = MatbenchKFold().split(np.zeros(len(y)))
    folds = {str(k): {"y_pred": (y[test] + 1.0).tolist()} for k, (_, test) in enumerate(splits)}
    results = {"task": task, "models": {"m": {"folds": folds}}}
    matbench.record_matbench(results, tmp_path, str(MATBENCH))
    path = tmp_path / "m.matbench-record.json.gz"
    scores = MatbenchBenchmark.from_file(str(path)).tasks_map[task].scores
    assert scores["mae"]["mean"] == pytest.approx(1.0)
    # a committed record of other days: rebuilt from the same predictions, it stays as it is
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "datestamp": "2020.01.01 00:00.00", "hash": "x"}))
    before = path.read_bytes()
    matbench.record_matbench(results, tmp_path, str(MATBENCH))
    assert path.read_bytes() == before
    folds["0"]["y_pred"][0] += 1.0  # another prediction: written afresh
    matbench.record_matbench(results, tmp_path, str(MATBENCH))
    assert json.loads(path.read_text())["datestamp"] != "2020.01.01 00:00.00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.matbench-record.json.gz"]


def test_the_resume_key_of_a_hybrid_is_the_same_in_every_process():
    """Processes writing one results file keep another's fold only if its key equals theirs.

    A nested network's repr shows skorch's set of parameters in hash order, which differs
    between processes: a hybrid fold finished beside another process was dropped when that
    process saved. The key must not depend on the process's hash seed.
    """
    import subprocess
    import sys

    script = (
        "import json; from benchmarks import matbench\n"
        "args = matbench.parse_args(['--task', 'matbench_dielectric'])\n"
        "print(json.dumps(matbench.model_params(matbench.MODELS['hybrid'](args, 2))))"
    )
    keys = [
        json.loads(subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout)
        for seed in ("1", "2", "3")
    ]  # fmt: skip
    assert keys[0] == keys[1] == keys[2]
    network = keys[0]["features__transformer_list"]
    assert "CGCNNRegressor(batch_size=128," in network and "random_state=2," in network


@pytest.mark.parametrize("task", ["matbench_jdft2d", "matbench_dielectric", "matbench_perovskites"])
def test_the_committed_folds_resume_under_the_documented_command(task):
    """A parameter added to an estimator changes the resume key of every stored fold, and the
    documented command would then refit hours of folds; a stored key must be today's key."""
    args = matbench.parse_args(["--task", task])
    stored = json.loads((matbench.RESULTS / task / "results.json").read_text())["models"]
    stale = [
        (name, fold)
        for name, model in stored.items()
        for fold, record in model["folds"].items()
        if record["params"] != matbench.model_params(matbench.MODELS[name](args, int(fold)))
    ]
    assert not stale
    assert sum(len(model["folds"]) for model in stored.values()) >= 15
