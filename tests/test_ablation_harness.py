"""The issue #14 benchmark scripts (ablation, oversmoothing, --models message), on subsamples."""

import json
import shutil

import numpy as np
import pytest

from benchmarks import ablation, matbench, oversmoothing
from skgnn import MessageNet

from .conftest import MATBENCH

SMOKE = ["--subsample", "40", "--folds", "0", "--max-epochs", "1", "--data-home", str(MATBENCH)]


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    argv = [*SMOKE, "--task", "matbench_jdft2d", "--rows", "cgcnn,message,epochs_double"]
    ablation.main([*argv, "--out", str(out)])
    return out, argv


def test_ablation_records_each_row_and_fold(ablation_run):
    out, _ = ablation_run
    results = json.loads((out / "ablation.json").read_text())
    rows = results["tasks"]["matbench_jdft2d"]
    assert list(rows) == ["cgcnn", "message", "epochs_double"]
    message = rows["message"]["folds"]["0"]
    assert message["epochs"] == 1 and rows["epochs_double"]["folds"]["0"]["epochs"] == 2
    assert message["parameters"] == sum(
        p.numel() for p in MessageNet(edge_width=128, nbr_fea_len=33).parameters()
    )
    assert message["params"]["crystalgraphtransformer__max_neighbors"] == "24"
    assert 0 < message["seconds_per_epoch"] < message["fit_s"]
    markdown = (out / "ablation.md").read_text()
    assert "| message | MessageNet, the Matbench row's settings | 1 |" in markdown
    assert "Smoke run: 40 rows" in markdown


def test_ablation_resumes_without_refitting(ablation_run, monkeypatch):
    out, argv = ablation_run
    before = (out / "ablation.json").read_text()

    def refit(*args, **kwargs):
        raise AssertionError("a finished row was fitted again")

    monkeypatch.setattr(ablation, "run_fold", refit)
    ablation.main([*argv, "--out", str(out)])
    after = json.loads((out / "ablation.json").read_text())
    assert after["tasks"] == json.loads(before)["tasks"]


def test_processes_running_other_rows_keep_each_others_rows(ablation_run, tmp_path, monkeypatch):
    """Two processes on one folder: the one that writes last keeps the other's rows."""
    other, argv = ablation_run
    real_run_fold = ablation.run_fold

    def fold_while_the_other_finishes(*args):
        result = real_run_fold(*args)
        shutil.copy(other / "ablation.json", tmp_path / "ablation.json")
        return result

    monkeypatch.setattr(ablation, "run_fold", fold_while_the_other_finishes)
    ablation.main([*argv, "--rows", "neighbors_12", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "ablation.json").read_text())["tasks"]["matbench_jdft2d"]
    theirs = json.loads((other / "ablation.json").read_text())["tasks"]["matbench_jdft2d"]
    assert sorted(rows) == sorted([*theirs, "neighbors_12"])
    assert {row: rows[row] for row in theirs} == theirs
    table = [line.split(" | ")[0] for line in (tmp_path / "ablation.md").read_text().splitlines()]
    in_rows_order = ["| cgcnn", "| message", "| neighbors_12", "| epochs_double"]
    assert [row for row in table if row.startswith("| ")][1:5] == in_rows_order


def test_a_fold_that_matbench_ran_with_the_same_settings_is_taken_not_refitted(
    tmp_path, monkeypatch
):
    import argparse

    task = "matbench_jdft2d"
    X, y, _ = matbench.load_task(task, str(MATBENCH))
    splits = list(matbench.MatbenchKFold().split(np.zeros(len(y))))
    estimator = ablation.ROWS["message"][1](task, 0, None)
    record = {"mae": 25.4, "fit_s": 850.0, "peak_rss_mb": 750.0, "n_train": 508,
              "params": matbench.model_params(estimator)}  # fmt: skip
    other = {**record, "mae": 99.0, "params": {**record["params"], "x": "1"}}
    (tmp_path / task / "rerun").mkdir(parents=True)
    for path, fold in ((tmp_path / task / "results.json", other),
                       (tmp_path / task / "rerun" / "results.json", record)):  # fmt: skip
        path.write_text(json.dumps({"data": {"subsample": None},
                                    "models": {"message": {"folds": {"0": fold}}}}))  # fmt: skip
    monkeypatch.setattr(ablation, "RESULTS", tmp_path)

    def refit(*args, **kwargs):
        raise AssertionError("a fold matbench ran was fitted again")

    monkeypatch.setattr(ablation, "run_fold", refit)
    results = {"tasks": {}}
    args = argparse.Namespace(folds=[0], max_epochs=None, subsample=None)
    ablation.run_row(task, "message", args, X, y, splits, results, lambda: None, settings={})
    fold = results["tasks"][task]["message"]["folds"]["0"]
    assert fold["mae"] == 25.4 and fold["source"] == f"{task}/rerun/results.json"
    # 200 epochs, not timed one by one before: an upper bound from the fit's total
    assert fold["seconds_per_epoch"] == pytest.approx(850.0 / 200)
    assert fold["seconds_per_epoch_upper"] is True
    assert fold["parameters"] == sum(
        p.numel() for p in MessageNet(edge_width=128, nbr_fea_len=33).parameters()
    )
    assert "| message | MessageNet, the Matbench row's settings | 1 | 25.4 ± 0 | ≤ 4.25 |" in (
        ablation.render({"machine": {"cpu": "x", "cores": 2, "packages": {"torch": "t"},
                                     "torch_threads": 1},
                         "command": "c", "data": {}, "tasks": results["tasks"]})
    )  # fmt: skip
    with pytest.raises(AssertionError, match="fitted again"):  # other settings: no match
        ablation.run_row(task, "edge_layers_1", args, X, y, splits, results, lambda: None, {})


def test_oversmoothing_writes_mae_and_spread_per_depth(tmp_path):
    argv = [*SMOKE[:2], "--max-epochs", "1", "--data-home", str(MATBENCH)]
    oversmoothing.main([*argv, "--depths", "1,2", "--networks", "cgcnn_all,message_last",
                        "--out", str(tmp_path)])  # fmt: skip
    results = json.loads((tmp_path / "oversmoothing.json").read_text())
    runs = results["runs"]["message_last"]
    assert sorted(runs) == ["1", "2"]
    record = runs["2"]["0"]
    assert len(record["spread_by_layer"]["distance"]) == 3  # layer 0 and two layers
    assert record["spread_by_layer"]["distance"][0] == pytest.approx(1.0)
    assert record["spread_last"] == record["spread_by_layer"]["distance"][-1] > 0
    assert (tmp_path / "oversmoothing.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cgcnn_all | 2 | 1 |" in (tmp_path / "oversmoothing.md").read_text()


def test_mean_pairwise_distance_by_hand():
    import torch

    vectors = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    # pairs: 5, 4, 3, each counted twice over 3 * 2 ordered pairs
    assert oversmoothing._mean_pairwise_distance(vectors) == pytest.approx(4.0)


def test_matbench_harness_runs_the_message_row(tmp_path):
    argv = ["--subsample", "40", "--folds", "0", "--max-epochs", "1", "--models", "message",
            "--data-home", str(MATBENCH), "--out", str(tmp_path)]  # fmt: skip
    results = matbench.main(argv)
    record = results["models"]["message"]["folds"]["0"]
    assert record["params"]["cgcnnregressor__module"] == "'message'"
    assert record["params"]["cgcnnregressor__criterion"] == "torch.nn.modules.loss.L1Loss"
    assert np.isfinite(record["mae"])
    assert record["epochs"] == 1 and 0 < record["seconds_per_epoch"] < record["fit_s"]


def test_the_message_hybrid_cross_fits_the_message_row():
    args = matbench.parse_args(["--task", "matbench_dielectric", "--models", "hybrid_message"])
    hybrid = matbench.MODELS["hybrid_message"](args, 3)
    graph_model = dict(hybrid["features"].transformer_list)["graph_network"].estimator
    expected = matbench.MODELS["message"](args, 3)
    assert matbench.model_params(graph_model) == matbench.model_params(expected)
    assert graph_model[-1].module == "message" and graph_model[-1].max_epochs == 100


@pytest.mark.slow  # ~1 min: five ensemble and forest fits on jdft2d's fold 0
def test_uncertainty_benchmark_records_both_lines_and_resumes_only_with_its_settings(tmp_path):
    from benchmarks import uncertainty

    argv = ["--task", "matbench_jdft2d", "--folds", "0", "--members", "2", "--max-epochs", "1",
            "--n-jobs", "1", "--forest-cv", "0", "--data-home", str(MATBENCH),
            "--out", str(tmp_path)]  # fmt: skip
    results = uncertainty.main(argv)
    lines = results["lines"]
    assert lines["cgcnn_ensemble"]["settings"] == {
        "members": 2, "max_epochs": 1, "ensemble_cv": None, "recalibration": "coverage",
        "noise": True}  # fmt: skip
    assert lines["rf_scm_magpie"]["settings"] == {
        "forest_cv": 0, "recalibration": "coverage", "noise": True}  # fmt: skip
    for line in ("cgcnn_ensemble", "rf_scm_magpie"):
        fold = lines[line]["folds"]["0"]
        y, mean, std = (np.array(fold[k]) for k in ("y_true", "y_mean", "y_std"))
        assert fold["mae"] == pytest.approx(np.mean(np.abs(y - mean)))
        assert fold["miscalibration_area"] == pytest.approx(
            uncertainty.miscalibration_area(y, mean, std)
        )
        assert fold["noise_std"] >= 0 and fold["std_scale"] > 0
    assert len(lines["cgcnn_ensemble"]["folds"]["0"]["member_mae"]) == 2
    markdown = (tmp_path / "uncertainty.md").read_text()
    assert "| cgcnn_ensemble | 1 |" in markdown and "Sampling floor" in markdown
    again = uncertainty.main(argv)  # the same settings: the fold is kept, not refitted
    assert again == json.loads((tmp_path / "uncertainty.json").read_text())
    assert again["lines"]["cgcnn_ensemble"]["folds"] == lines["cgcnn_ensemble"]["folds"]
    # the forest alone with other settings: it starts over, the ensemble's fold stays
    other = uncertainty.main([*argv, "--no-noise", "--lines", "rf_scm_magpie", "--replace"])
    assert other["lines"]["rf_scm_magpie"]["folds"]["0"]["noise_std"] == 0.0
    assert other["lines"]["rf_scm_magpie"]["settings"]["noise"] is False
    assert other["lines"]["cgcnn_ensemble"] == again["lines"]["cgcnn_ensemble"]


def test_uncertainty_benchmark_refuses_before_any_fit_what_would_drop_or_cannot_run(
    tmp_path, capsys, monkeypatch
):
    """A line stored with other settings is not dropped unless --replace; a bad fold or line
    name is refused; each before the data are even loaded, the stored file untouched."""
    from benchmarks import uncertainty

    monkeypatch.setattr(uncertainty, "load_task", lambda *a: pytest.fail("loaded the data"))
    stored = {"task": "matbench_jdft2d", "lines": {"rf_scm_magpie": {
        "settings": {"forest_cv": 5, "recalibration": "coverage", "noise": True},
        "machine": {}, "command": "", "folds": {"0": {"mae": 1.0}}}}}  # fmt: skip
    (tmp_path / "uncertainty.json").write_text(json.dumps(stored))
    base = ["--out", str(tmp_path), "--lines", "rf_scm_magpie"]
    for extra, message in [
        (["--forest-cv", "0"], "holds rf_scm_magpie fitted with {'forest_cv': 5, "),
        (["--folds", "0,5"], "--folds must be among 0,1,2,3,4; got '0,5'"),
        (["--lines", "forest"], "unknown line(s) ['forest']; choose from"),
    ]:
        with pytest.raises(SystemExit):
            uncertainty.main([*base, *extra])
        assert message in capsys.readouterr().err
    assert json.loads((tmp_path / "uncertainty.json").read_text()) == stored


def test_uncertainty_folds_of_processes_sharing_a_file_are_merged_by_settings(tmp_path):
    """Each process adds its folds to what the others stored; other settings are replaced."""
    from benchmarks import uncertainty

    path = tmp_path / "uncertainty.json"
    settings = {"forest_cv": 0, "recalibration": "coverage", "noise": True}

    def line(folds, **changed):
        return {"settings": {**settings, **changed}, "machine": {"cpu": "c", "cores": 2},
                "command": "c", "folds": folds}  # fmt: skip

    fold = {"mae": 1.0, "miscalibration_area_raw": 0.2, "miscalibration_area": 0.1,
            "spearman_abs_error_std": 0.5, "nll_raw": 1.0, "nll": 0.9,
            "y_true": [0.0, 1.0], "y_mean": [0.1, 0.9], "y_std": [0.2, 0.2]}  # fmt: skip
    other_process = {"task": "t", "lines": {"rf_scm_magpie": line({"1": fold}),
                                            "cgcnn_ensemble": line({"2": fold})}}  # fmt: skip
    path.write_text(json.dumps(other_process))
    mine = {"rf_scm_magpie": line({"0": fold})}
    written = uncertainty._merged(path, "t", mine, write=True)
    assert sorted(written["lines"]["rf_scm_magpie"]["folds"]) == ["0", "1"]
    assert written["lines"]["cgcnn_ensemble"] == other_process["lines"]["cgcnn_ensemble"]
    assert json.loads(path.read_text()) == written
    row = next(r for r in (tmp_path / "uncertainty.md").read_text().splitlines()
               if r.startswith("| rf_scm_magpie | 2 |"))  # fmt: skip
    cells = [cell.strip() for cell in row.split("|")]
    floors = (uncertainty.sampling_floor(2), uncertainty.sampling_floor(4))  # a fold, both pooled
    assert (cells[6], cells[8]) == tuple(f"{floor:.3f}" for floor in floors)
    replacing = {"rf_scm_magpie": line({"3": fold}, noise=False)}
    written = uncertainty._merged(path, "t", replacing, write=True)
    assert list(written["lines"]["rf_scm_magpie"]["folds"]) == ["3"]


def test_folds_stored_with_other_settings_leave_the_row_even_when_not_rerun():
    """Running fold 0 of a changed row drops its stale folds 1-4 rather than mixing settings."""
    import argparse

    task = "matbench_jdft2d"
    current = matbench.model_params(ablation.ROWS["message"][1](task, 0, None))
    fold = {"mae": 30.0, "params": current}
    stale = {"mae": 99.0, "params": {**current, "x": "old"}}
    results = {"tasks": {task: {"message": {"what": "w", "folds": {"0": fold, "1": stale}}}}}
    args = argparse.Namespace(folds=[0], max_epochs=None, subsample=None)
    settings: dict = {}
    ablation.run_row(task, "message", args, None, None, None, results, lambda: None, settings)
    assert results["tasks"][task]["message"]["folds"] == {"0": fold}
    # perovskites runs fold 0 by default; a fold 3 run before with --folds 3 is judged too
    perovskites = "matbench_perovskites"
    done, kept = (
        {"mae": 0.03, "params": matbench.model_params(
            ablation.ROWS["message"][1](perovskites, k, None))}
        for k in (0, 3)
    )  # fmt: skip
    rows = {"message": {"what": "w", "folds": {"0": done, "3": kept, "4": fold}}}
    results["tasks"][perovskites] = rows
    ablation.run_row(perovskites, "message", args, None, None, None, results, lambda: None, {})
    assert rows["message"]["folds"] == {"0": done, "3": kept}  # fold 4 held jdft2d's settings
    # another process's file still holding the stale fold does not bring it back
    stored = {"data": {}, "tasks": {task: {"message": {"what": "w", "folds": {"1": stale}}}}}
    ablation.merge_finished_rows({**results, "data": {}}, stored, settings)
    assert results["tasks"][task]["message"]["folds"] == {"0": fold}


def test_folds_outside_the_official_five_are_refused(capsys):
    with pytest.raises(SystemExit):
        ablation.parse_args(["--folds", "0,7"])
    assert "--folds must be among 0,1,2,3,4; got '0,7'" in capsys.readouterr().err


def test_a_lines_stored_command_runs_all_its_folds_and_resumes():
    """Its folds came from processes given other --folds; the last one's command ran one."""
    from benchmarks import uncertainty

    argv = ["--task", "matbench_perovskites", "--lines", "cgcnn_ensemble", "--folds", "4",
            "--n-jobs", "1", "--replace", "--folds=3"]  # fmt: skip
    assert uncertainty.line_command(argv) == (
        "python -m benchmarks.uncertainty --task matbench_perovskites --lines cgcnn_ensemble "
        "--n-jobs 1"
    )
