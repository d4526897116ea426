"""benchmarks/asv_vs_pytest.py's arithmetic over rounds (medians, ranges of the per-round ratios, missing
cases, the agree/disagree line), its round order and its --rounds check. No asv or pytest-benchmark run."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a package at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.asv_vs_pytest import main, round_order, summarize  # noqa: E402


def test_medians_and_range_over_rounds():
    rounds = [({1000: 2.0, 10000: 20.0}, {1000: 1.0, 10000: 25.0}),
              ({1000: 3.0, 10000: 30.0}, {1000: 4.0, 10000: 20.0}),
              ({1000: 1.0, 10000: 10.0}, {1000: 1.0, 10000: 40.0})]
    s = summarize(rounds, [1000, 10000])
    a = s["cases"][1000]
    assert a["asv"] == 2.0 and a["pytest"] == 1.0
    assert a["ratios"] == [2.0, 0.75, 1.0]
    assert (a["ratio"], a["lo"], a["hi"], a["rounds"]) == (1.0, 0.75, 2.0, 3)
    assert a["verdict"] == "agree"
    b = s["cases"][10000]
    assert b["asv"] == 20.0 and b["pytest"] == 25.0
    assert b["ratios"] == [0.8, 1.5, 0.25]
    assert (b["ratio"], b["lo"], b["hi"]) == (0.8, 0.25, 1.5)
    assert s["verdict"].startswith("tools agree within noise")


def test_even_number_of_rounds_takes_the_middle_mean():
    rounds = [({"c": 1.0}, {"c": 1.0}), ({"c": 3.0}, {"c": 1.0})]
    e = summarize(rounds, ["c"])["cases"]["c"]
    assert e["asv"] == 2.0 and e["ratio"] == 2.0 and (e["lo"], e["hi"]) == (1.0, 3.0)
    assert e["verdict"] == "agree"  # 1.0 on the range's edge counts as inside


def test_disagree_above_and_below():
    rounds = [({"fast": 1.0, "slow": 2.0}, {"fast": 2.0, "slow": 1.0}),
              ({"fast": 1.5, "slow": 3.0}, {"fast": 2.0, "slow": 2.0})]
    s = summarize(rounds, ["fast", "slow"])
    assert s["cases"]["fast"]["verdict"] == "below"
    assert s["cases"]["slow"]["verdict"] == "above"
    assert s["verdict"].startswith("tools disagree: every round's ratio is above 1 for slow; below 1 for fast")


def test_mixed_verdict_names_the_agreeing_cases():
    rounds = [({"a": 1.0, "b": 2.0}, {"a": 1.1, "b": 1.0}), ({"a": 1.2, "b": 2.5}, {"a": 1.0, "b": 2.0})]
    s = summarize(rounds, ["a", "b"])
    assert s["verdict"] == "tools disagree: every round's ratio is above 1 for b (agree within noise for a)"


def test_case_missing_from_a_round_is_nan_there_and_left_out_of_the_medians():
    rounds = [({1: 2.0}, {1: 1.0}),
              ({}, {1: 3.0}),                      # asv lacks the case this round
              ({1: 4.0}, {1: math.nan}),           # pytest's value is not a number
              ({1: 2.0}, {1: 2.0})]
    e = summarize(rounds, [1])["cases"][1]
    assert math.isnan(e["ratios"][1]) and math.isnan(e["ratios"][2])
    assert e["ratios"][0] == 2.0 and e["ratios"][3] == 1.0
    assert e["rounds"] == 2 and (e["lo"], e["hi"]) == (1.0, 2.0) and e["ratio"] == 1.5
    assert e["asv"] == 2.0      # median of 2, 4, 2
    assert e["pytest"] == 2.0   # median of 1, 3, 2


def test_case_missing_everywhere_and_a_single_round():
    rounds = [({"x": 2.0}, {"x": 1.0, "y": 1.0})]
    s = summarize(rounds, ["x", "y", ("adam", "flat_1e7")])
    y, z = s["cases"]["y"], s["cases"][("adam", "flat_1e7")]
    assert y["verdict"] == z["verdict"] == "none" and y["rounds"] == 0
    assert math.isnan(y["ratio"]) and math.isnan(y["lo"]) and math.isnan(y["asv"]) and y["pytest"] == 1.0
    assert math.isnan(z["asv"]) and math.isnan(z["pytest"])
    assert s["cases"]["x"]["verdict"] == "one round"
    assert "one round only for x" in s["verdict"]
    assert "no ratio for y, adam/flat_1e7" in s["verdict"]


def test_round_order_alternates():
    assert [round_order(r) for r in range(4)] == [("asv", "pytest"), ("pytest", "asv")] * 2


@pytest.mark.parametrize("bad", ["0", "-2", "x", "1.5"])
def test_rounds_must_be_a_positive_integer(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--rounds", bad])
    assert exc.value.code == 2
    assert "--rounds" in capsys.readouterr().err
