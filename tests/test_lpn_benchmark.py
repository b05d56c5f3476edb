"""The LPN benchmark's tuning rule: successive halving over the validation fields (issue 8, ninth round)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from neuralpde.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lpn_benchmark", ROOT / "benchmarks" / "lpn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module             # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_rounds_of_the_default_rule_and_of_the_earlier_single_round(bench):
    # 4 sigma x 5 stages x 12 factors: all on 4 fields, the best 24 on 16, the best 4 on 48
    assert bench.halving_rounds(240, 4, 16, 32, 4) == [(4, 24), (16, 4), (48, 1)]
    # a baseline's 11 lambdas: the best tenth is fewer than the finalists, so 4 go on
    assert bench.halving_rounds(11, 4, 16, 32, 4) == [(4, 4), (16, 4), (48, 1)]
    # a grid no larger than what the screen keeps is not screened
    assert bench.halving_rounds(3, 4, 16, 32, 4) == [(16, 4), (48, 1)]
    # --screen 0 --confirm 0: every choice on the validation fields, as before the ninth round
    assert bench.halving_rounds(240, 0, 16, 0, 4) == [(16, 1)]


def test_successive_halving_picks_the_best_mean_on_all_fields_and_scores_each_field_once(bench):
    # "lucky" leads on the first 16 fields (by 1) and trails on the 32 more (by 1.5): over all 48 "steady" wins.
    # "poor" is dropped after the screen and never scored beyond it.
    table = {"lucky": [11.0] * 16 + [8.5] * 32, "steady": [10.0] * 48,
             "poor": [0.0] * 48, **{f"c{k}": [5.0 + 0.1 * k] * 48 for k in range(20)}}
    calls = []

    def score(choice, i):
        calls.append((choice, i))
        return table[choice][i]

    rounds = bench.halving_rounds(len(table), 4, 16, 32, 4)
    best, history = bench.successive_halving(list(table), rounds, score, Progress(enabled=True), "tuning")
    assert best == "steady"
    assert len(calls) == len(set(calls))                         # each (choice, field) at most once
    # all 23 choices on 4 fields, the best 4 on 12 more, those 4 on 32 more
    assert len(calls) == 23 * 4 + 4 * 12 + 4 * 32
    assert max(i for c, i in calls if c == "poor") == 3         # screened out on the first 4 fields
    assert set(history[16]) == {"lucky", "steady", "c19", "c18"}    # the best tenth (at least 4) after the screen
    assert history[16]["lucky"] == pytest.approx(11.0) and history[48]["lucky"] == pytest.approx(28 / 3)
    # the single round of the earlier runs picks the lucky one
    single, _ = bench.successive_halving(list(table), bench.halving_rounds(len(table), 0, 16, 0, 4), score)
    assert single == "lucky"


def test_ties_keep_the_grid_order(bench):
    best, _ = bench.successive_halving(["a", "b", "c"], [(2, 2), (4, 1)], lambda c, i: 1.0)
    assert best == "a"


def test_confirmation_fields_are_their_own_and_may_be_none(bench):
    import argparse

    import torch

    args = argparse.Namespace(grid=16, val=2, fields=2, confirm=3)
    conf = bench.confirmation_fields(args)
    val, test = bench.validation_and_test_fields(args)
    assert conf.shape == (3, 256)
    assert not any(torch.equal(c, v) for c in conf for v in torch.cat([val, test]))
    # --confirm 0, the rule of the earlier runs: no further fields (the sampler itself rejects a batch of 0)
    args.confirm = 0
    assert bench.confirmation_fields(args).shape == (0, 256)
