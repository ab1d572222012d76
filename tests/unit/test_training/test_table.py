"""Routing tables: stacking a user's own data on a base dataset's training rows."""

import numpy as np

from training.table import RoutingTable, stack


def table(name, prompts, models, scores, splits):
    scores = np.array(scores, dtype=float)
    return RoutingTable(name=name, prompts=prompts, models=models, scores=scores,
                        costs=np.where(np.isnan(scores), np.nan, 0.01),
                        tasks=np.array(["t"] * len(prompts)), splits=np.array(splits))


def test_stacking_keeps_the_bases_training_rows_and_unions_the_models():
    base = table("base", ["b1", "b2", "b3"], ["old", "shared"],
                 [[1, 0], [0, 1], [1, 1]], ["train", "train", "test"])
    mine = table("mine", ["m1", "m2"], ["shared", "new"], [[1, 0], [0, 1]], ["train", "test"])
    got = stack(base, mine)
    assert got.prompts == ["b1", "b2", "m1", "m2"]  # the base's test row stays out
    assert got.models == ["old", "shared", "new"]
    np.testing.assert_array_equal(got.scores, [[1, 0, np.nan], [0, 1, np.nan],
                                               [np.nan, 1, 0], [np.nan, 0, 1]])
    assert list(got.splits) == ["train", "train", "train", "test"]
    assert got.name == "base+mine"
