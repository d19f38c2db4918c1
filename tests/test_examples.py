"""The examples run offline on the embedded jdft2d and say what they promise (short schedules)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, out: Path) -> str:
    command = [sys.executable, str(EXAMPLES / name), *args, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes()[:4] == b"\x89PNG"
    return done.stdout


def test_contributions_example_prints_sites_that_average_to_the_prediction(tmp_path):
    printed = run_example("contributions.py", "--max-epochs", "2", out=tmp_path / "c.png")
    found = re.search(r"predicted (-?[\d.]+) meV/atom \(mean of its (\d+) sites' contributions: "
                      r"(-?[\d.]+);", printed)  # fmt: skip
    assert found, printed
    predicted, n_sites, mean = float(found[1]), int(found[2]), float(found[3])
    assert n_sites > 0 and mean == pytest.approx(predicted, abs=0.051)


def test_uncertainty_example_prints_calibration_and_the_extreme_predictions(tmp_path):
    printed = run_example(
        "uncertainty.py", "--members", "2", "--max-epochs", "2", out=tmp_path / "u.png"
    )
    found = re.search(r"miscalibration area ([\d.]+) raw, ([\d.]+) recalibrated", printed)
    assert found, printed
    assert all(0 <= float(area) <= 0.5 for area in found.groups())
    assert printed.index("most certain") < printed.index("least certain")
    spreads = [float(std) for std in re.findall(r"^ +\S+: +-?[\d.]+ ± +([\d.]+)", printed, re.M)]
    assert len(spreads) == 6, printed
    assert max(spreads[:3]) <= min(spreads[3:])  # the most certain three, then the least


def test_hybrid_example_prints_the_three_lines_of_one_fold(tmp_path):
    printed = run_example(
        "hybrid.py", "--max-epochs", "2", "--inner-folds", "2", out=tmp_path / "h.png"
    )
    assert "official fold 0" in printed
    maes = dict(re.findall(r"^  ([\w ,/+-]+?): ([\d.]+)$", printed, flags=re.M))
    assert len(maes) == 3, printed
    assert all(float(mae) > 0 for mae in maes.values())
