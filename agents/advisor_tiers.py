"""Tiers learned from users' rate profiles: k-means on (log(p50 + 1), log(p99 + 1)), numpy only.

Deterministic: k-means++ seeding from a seeded generator, a few restarts, the lowest within-cluster sum
of squares kept. Without a given ``k``, the k of 2..``max_k`` with the highest mean silhouette is
chosen (a tier is only worth having if its users are closer to each other than to the next tier's).
Tiers are named ``tier1``, ``tier2``, ... by their centre's p50, lowest first, so the names do not
depend on the random start.
"""

import logging
from typing import Mapping

import numpy as np

from agents.advisor import UserProfile

__all__ = ["confusion", "features", "kmeans", "learn_tiers", "purity", "silhouette"]

logger = logging.getLogger(__name__)


def features(profiles: Mapping[str, UserProfile]) -> np.ndarray:
    return np.array([[np.log1p(p.p50), np.log1p(p.p99)] for p in profiles.values()]).reshape(-1, 2)


def kmeans(points: np.ndarray, k: int, seed: int = 0, restarts: int = 5,
           iterations: int = 100) -> tuple[np.ndarray, float]:
    """(labels, within-cluster sum of squares) of the best of ``restarts`` k-means++ runs."""
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, float] | None = None
    for _ in range(restarts):
        centres = [points[rng.integers(len(points))]]
        for _ in range(1, k):  # k-means++: the next centre far from those chosen
            d2 = ((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(1)
            total = d2.sum()
            pick = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
            centres.append(points[pick])
        centre = np.array(centres)
        labels = np.zeros(len(points), int)
        for _ in range(iterations):
            labels_new = ((points[:, None, :] - centre[None]) ** 2).sum(-1).argmin(1)
            centre = np.array([points[labels_new == j].mean(0) if (labels_new == j).any() else centre[j]
                               for j in range(k)])
            if (labels_new == labels).all():
                break
            labels = labels_new
        labels = ((points[:, None, :] - centre[None]) ** 2).sum(-1).argmin(1)
        sse = float(((points - centre[labels]) ** 2).sum())
        if best is None or sse < best[1]:
            best = (labels, sse)
    return best


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """The mean silhouette (a point alone in its cluster scores 0)."""
    distance = np.sqrt(((points[:, None, :] - points[None]) ** 2).sum(-1))
    clusters = np.unique(labels)
    if len(clusters) < 2:
        return 0.0
    mean_to = np.stack([distance[:, labels == c].mean(1) for c in clusters], 1)  # point x cluster
    sizes = np.array([(labels == c).sum() for c in clusters])
    own = np.searchsorted(clusters, labels)
    a = mean_to[np.arange(len(points)), own] * sizes[own] / np.maximum(sizes[own] - 1, 1)  # without itself
    mean_to[np.arange(len(points)), own] = np.inf
    b = mean_to.min(1)
    score = np.where(sizes[own] > 1, (b - a) / np.maximum(a, b), 0.0)
    return float(np.nan_to_num(score).mean())


def learn_tiers(profiles: Mapping[str, UserProfile], k: int | None = None, seed: int = 0,
                max_k: int = 8) -> dict[str, str]:
    """user -> tier name (``tier1`` the lightest), ``k`` tiers or the k with the best silhouette."""
    if not profiles:
        return {}
    points = features(profiles)
    distinct = len(np.unique(points, axis=0))
    if k is None:
        scored = [(silhouette(points, kmeans(points, j, seed)[0]), j) for j in range(2, min(max_k, distinct - 1) + 1)]
        logger.info("silhouette by k: %s", scored)
        k = max(scored)[1] if scored else 1
    labels, _ = kmeans(points, max(1, min(k, distinct)), seed)
    order = sorted(set(labels.tolist()), key=lambda c: np.median(points[labels == c, 0]))
    names = {c: f"tier{i + 1}" for i, c in enumerate(order)}
    return {user: names[label] for user, label in zip(profiles, labels.tolist())}


def confusion(truth: Mapping[str, str], tiers: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """tier -> {true label: users}, over the users in both."""
    table: dict[str, dict[str, int]] = {}
    for user, tier in tiers.items():
        if user in truth:
            row = table.setdefault(tier, {})
            row[truth[user]] = row.get(truth[user], 0) + 1
    return dict(sorted(table.items()))


def purity(table: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Per tier: the share of its users with its majority label."""
    return {tier: max(row.values()) / sum(row.values()) for tier, row in table.items() if row}
