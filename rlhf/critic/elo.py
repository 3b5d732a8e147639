"""Elo scores from pairwise preferences (who beat whom, ties as half a win each), fitted as a Bradley-Terry model
by maximum likelihood (the order of the games does not matter, unlike sequential Elo updates) and put on the Elo
scale: P(a beats b) = 1 / (1 + 10^((elo_b - elo_a) / 400)), the mean at 1000."""
from __future__ import annotations

import math


def elo_scores(games: list[tuple[str, str, float]], iterations: int = 2000, prior_games: float = 0.5) -> dict:
    """`games`: (a, b, outcome) with outcome 1 if a won, 0 if b won, 0.5 for a tie. Each player also plays
    `prior_games` drawn games against a virtual average player, so that a player who won (or lost) every game
    gets a finite score. Returns {player: Elo}."""
    players = sorted({p for a, b, _ in games for p in (a, b)})
    if not players:
        return {}
    wins = {p: prior_games / 2 for p in players}          # the prior's half wins against the average player
    played: dict[tuple[str, str], float] = {}
    for a, b, outcome in games:
        wins[a] += outcome
        wins[b] += 1 - outcome
        key = (a, b) if a < b else (b, a)
        played[key] = played.get(key, 0.0) + 1
    strength = {p: 1.0 for p in players}
    for _ in range(iterations):                           # Zermelo / minorization-maximization updates
        new = {}
        for p in players:
            denominator = prior_games / (strength[p] + 1.0)
            for (a, b), count in played.items():
                if p in (a, b):
                    other = b if p == a else a
                    denominator += count / (strength[p] + strength[other])
            new[p] = wins[p] / denominator
        strength = new
    logs = {p: 400 * math.log10(s) for p, s in strength.items()}
    mean = sum(logs.values()) / len(logs)
    return {p: 1000 + v - mean for p, v in logs.items()}
