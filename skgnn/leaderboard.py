"""Matbench v0.1 leaderboard figures: mean MAE over the five official folds.

Source: the Matbench leaderboard (materialsproject/matbench), as of its v0.1
results; units are the task's target units.
"""

from __future__ import annotations

LEADERBOARD_MAE: dict[str, dict[str, float]] = {
    "matbench_jdft2d": {
        "CGCNN": 49.2440, "ALIGNN": 43.4244, "coGN": 37.1652, "MODNet": 33.1918,
        "RF-SCM/Magpie": 50.0440, "AMMExpress": 39.8497, "Dummy": 67.2851,
    },
    "matbench_dielectric": {
        "CGCNN": 0.5988, "ALIGNN": 0.3449, "coGN": 0.3088, "MODNet": 0.2711,
        "RF-SCM/Magpie": 0.4196, "AMMExpress": 0.3150, "Dummy": 0.8088,
    },
    "matbench_perovskites": {
        "CGCNN": 0.0452, "ALIGNN": 0.0288, "coGN": 0.0269, "MODNet": 0.0908,
        "RF-SCM/Magpie": 0.2355, "AMMExpress": 0.2005, "Dummy": 0.5660,
    },
}  # fmt: skip

UNITS = {
    "matbench_jdft2d": "meV/atom",
    "matbench_dielectric": "refractive index",
    "matbench_perovskites": "eV/unit cell",
}

TARGETS = {
    "matbench_jdft2d": "exfoliation_en",
    "matbench_dielectric": "n",
    "matbench_perovskites": "e_form",
}
