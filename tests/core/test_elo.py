"""Elo from pairwise preferences by hand: equal records tie, a 3:1 record is log10(3) x 400 apart (the
Bradley-Terry likelihood's solution), and the order of games does not matter."""
import math

import pytest

from rlhf.critic.elo import elo_scores


def test_elo_from_pairwise_preferences():
    assert elo_scores([]) == {}
    even = elo_scores([("a", "b", 1), ("a", "b", 0)], prior_games=0)
    assert even["a"] == pytest.approx(even["b"]) == pytest.approx(1000)
    three_to_one = elo_scores([("a", "b", 1)] * 3 + [("a", "b", 0)], prior_games=0)
    assert three_to_one["a"] - three_to_one["b"] == pytest.approx(400 * math.log10(3), abs=0.5)
    games = [("a", "b", 1), ("b", "c", 1), ("a", "c", 0.5), ("c", "b", 0)]
    assert elo_scores(games) == pytest.approx(elo_scores(list(reversed(games))))
    sweep = elo_scores([("a", "b", 1)] * 5)                # a perfect record stays finite with the prior
    assert math.isfinite(sweep["a"]) and sweep["a"] > sweep["b"]
