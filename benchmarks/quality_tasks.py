"""Task families with known answers for `bench_heads_quality.py`: generators of frame features
(video id → frames [T, D], labels, split) and the references each family is judged against
(scikit-learn probes, the oracle, the supervised ceiling). Seeds: tuning 2000-2999, report 3000+;
the tests use their own (700-799 and below)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

SPLITS = (("train", 600), ("val", 200), ("test", 400))
ISO = 2.0  # weak view: isotropic per-video noise (norm), so the supervised ceiling is below 1
C_GRID = [10 ** (e / 2) for e in range(-8, 9)]


@dataclass
class Task:
    family: str
    name: str
    multi_label: bool
    videos: dict  # video id → (frames [T, D] float32, labels, split)
    heads: tuple[str, ...]
    oracle: dict = field(default_factory=dict)  # video id → [C] scores from the true answer
    views: dict = field(default_factory=dict)  # extra views: name → {video id → frames}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _label_names(on: np.ndarray) -> tuple[str, ...]:
    return tuple(f"c{c:02d}" for c in np.flatnonzero(on))


def _splits():
    for split, count in SPLITS:
        for i in range(count):
            yield split, f"{split}-{i:05d}"


def probe_task(seed: int, *, dim: int, frames: int, classes: int, multi_label: bool, noise: float) -> Task:
    """Correlated classes (shared direction + own), visible in every frame at a random strength;
    `noise` is that of the mean-pooled video (per-frame noise grows with √frames)."""
    rng = np.random.default_rng(seed)
    scale = noise * np.sqrt(frames / 8) / np.sqrt(dim)
    centres = _unit(0.7 * rng.normal(size=dim) + rng.normal(size=(classes, dim)))
    density = rng.uniform(0.15, 0.4)
    videos = {}
    for split, vid in _splits():
        on = rng.random(classes) < density if multi_label else np.eye(classes, dtype=bool)[rng.integers(classes)]
        x = rng.uniform(0.5, 1.5, (frames, 1)) * (on @ centres) + scale * rng.normal(size=(frames, dim))
        videos[vid] = (x.astype(np.float32), _label_names(on), split)
    kind = "multi" if multi_label else "single"
    return Task(f"probe-{kind}", f"D{dim} T{frames} C{classes} σ{noise:.1f}", multi_label, videos, ("linear", "mlp"))


def fine_task(seed: int, *, dim: int, frames: int, pairs: int, noise: float) -> Task:
    """Fine-grained co-occurring labels: classes in confusable pairs (a shared base direction plus a
    small own component); a video's classes co-occur with their sibling. Noise as in `probe_task`."""
    rng = np.random.default_rng(seed)
    scale = noise * np.sqrt(frames / 8) / np.sqrt(dim)
    base = rng.normal(size=(pairs, dim))
    own = rng.normal(size=(2 * pairs, dim)) * 0.45
    centres = _unit(np.repeat(base, 2, axis=0) + own)
    videos = {}
    for split, vid in _splits():
        on = np.zeros(2 * pairs, dtype=bool)
        for p in rng.choice(pairs, size=int(rng.integers(1, 3)), replace=False):
            first = int(rng.integers(2))
            on[2 * p + first] = True
            on[2 * p + 1 - first] |= rng.random() < 0.35
        x = rng.uniform(0.5, 1.5, (frames, 1)) * (on @ centres) + scale * rng.normal(size=(frames, dim))
        videos[vid] = (x.astype(np.float32), _label_names(on), split)
    return Task("fine", f"D{dim} T{frames} C{2 * pairs} σ{noise:.1f}", True, videos, ("linear", "prototype"))


def sparse_task(seed: int, *, dim: int, frames: int, classes: int, amplitude: float) -> Task:
    """Sparse instances: a label is visible in 2-4 of `frames` frames (unit noise per dimension);
    oracle = max over frames of the projection on the true class direction."""
    rng = np.random.default_rng(seed)
    directions = _unit(rng.normal(size=(classes, dim)))
    videos, oracle = {}, {}
    for split, vid in _splits():
        on = rng.random(classes) < 0.3
        x = rng.normal(size=(frames, dim))
        for c in np.flatnonzero(on):
            x[rng.choice(frames, size=int(rng.integers(2, 5)), replace=False)] += amplitude * directions[c]
        videos[vid] = (x.astype(np.float32), _label_names(on), split)
        oracle[vid] = (x @ directions.T).max(axis=0)
    name = f"D{dim} T{frames} C{classes} A{amplitude:.2f}"
    return Task("sparse", name, True, videos, ("pool", "linear"), oracle=oracle)


def xor_task(seed: int, *, dim: int, frames: int, classes: int, noise: float) -> Task:
    """Not linearly separable: class c is on when the video's latent z has the same sign on a_c and b_c."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(classes, dim)), rng.normal(size=(classes, dim))
    videos = {}
    for split, vid in _splits():
        z = rng.normal(size=dim)
        on = (z @ a.T > 0) == (z @ b.T > 0)
        x = z + noise * rng.normal(size=(frames, dim))
        videos[vid] = (x.astype(np.float32), _label_names(on), split)
    return Task("xor", f"D{dim} T{frames} C{classes} σ{noise:.1f}", True, videos, ("mlp", "linear"))


def order_task(seed: int, *, dim: int, frames: int, events: int) -> Task:
    """Event order: each video shows `events` distinct event patterns one after the other; the class
    is the order (all permutations of a fixed pair/triple), so any order-blind pooling sees the same mean."""
    import itertools

    rng = np.random.default_rng(seed)
    patterns = _unit(rng.normal(size=(events, dim)))
    orders = list(itertools.permutations(range(events)))
    videos = {}
    for split, vid in _splits():
        label = int(rng.integers(len(orders)))
        cuts = np.linspace(0, frames, events + 1).round().astype(int)
        x = rng.normal(size=(frames, dim)) * 0.5 / np.sqrt(dim) * 4
        for k, event in enumerate(orders[label]):
            x[cuts[k] : cuts[k + 1]] += patterns[event]
        videos[vid] = (x.astype(np.float32), (f"order{label}",), split)
    return Task("order", f"D{dim} T{frames} E{events}", False, videos, ("temporal", "linear"))


def weak_view_task(seed: int, *, dim: int, frames: int, classes: int, nuisance: float) -> Task:
    """Two views: `clip` (weak: the class direction under a strong nuisance subspace) and `motion`
    (clean: its nearest neighbours are class-pure). Judged: contrastive on clip with K=5 motion
    neighbours vs K=0, and LDA with the true labels on clip as the ceiling."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(classes, dim)))
    nuisance_basis = rng.normal(size=(8, dim))
    strong = _unit(rng.normal(size=(classes, 32)))
    videos, motion = {}, {}
    for split, vid in _splits():
        c = int(rng.integers(classes))
        u = rng.normal(size=8) * nuisance
        base = centres[c] + u @ nuisance_basis / np.sqrt(dim) + ISO * rng.normal(size=dim) / np.sqrt(dim)
        x = base + rng.normal(size=(frames, dim)) * 0.3 / np.sqrt(dim) * 4
        videos[vid] = (x.astype(np.float32), (f"c{c:02d}",), split)
        motion[vid] = (strong[c] + 0.05 * rng.normal(size=(frames, 32))).astype(np.float32)
    task = Task("weak-view", f"D{dim} T{frames} C{classes} ν{nuisance:.2f}", False, videos, ("contrastive",))
    task.views = {"motion": motion}
    return task


def pooled(task: Task, split: str, vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ids = sorted(v for v, (_, _, s) in task.videos.items() if s == split)
    x = np.stack([task.videos[v][0].mean(axis=0) for v in ids])
    y = np.array([[name in task.videos[v][1] for name in vocabulary] for v in ids], dtype=int)
    return x, y, ids


def metric(y: np.ndarray, scores: np.ndarray, *, multi_label: bool) -> float:
    if multi_label:
        aps = [average_precision_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
        return float(np.mean(aps))
    return float((y.argmax(1) == scores.argmax(1)).mean())


def sklearn_probe(task: Task, vocabulary: list[str]) -> float:
    """StandardScaler + LogisticRegression on mean-pooled frames, C chosen on val, fitted on train."""
    (xt, yt, _), (xv, yv, _), (xs, ys, _) = (pooled(task, s, vocabulary) for s, _ in SPLITS)
    scaler = StandardScaler().fit(xt)
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000)
        model = OneVsRestClassifier(model) if task.multi_label else model
        model.fit(scaler.transform(xt), yt if task.multi_label else yt.argmax(1))
        value = metric(yv, model.predict_proba(scaler.transform(xv)), multi_label=task.multi_label)
        if best is None or value > best[0]:
            best = (value, model)
    return metric(ys, best[1].predict_proba(scaler.transform(xs)), multi_label=task.multi_label)


def oracle_score(task: Task, vocabulary: list[str]) -> float | None:
    if not task.oracle:
        return None
    _, ys, ids = pooled(task, "test", vocabulary)
    order = [int(name[1:]) for name in vocabulary]
    scores = np.stack([task.oracle[v][order] for v in ids])
    return metric(ys, scores, multi_label=task.multi_label)


def lda_ceiling(task: Task, vocabulary: list[str]) -> float:
    """Retrieval R@1 (test queries train, cosine) in the LDA space fitted with the true labels."""
    (xt, yt, _), _, (xs, ys, _) = (pooled(task, s, vocabulary) for s, _ in SPLITS)
    lda = LinearDiscriminantAnalysis().fit(xt, yt.argmax(1))
    gallery, queries = _unit(lda.transform(xt)), _unit(lda.transform(xs))
    nearest = (queries @ gallery.T).argmax(axis=1)
    return float((yt.argmax(1)[nearest] == ys.argmax(1)).mean())


def families(seeds: list[int]) -> list[Task]:
    """One instance of every family per seed; the seed also draws each family's sizes."""
    tasks = []
    for seed in seeds:
        rng = np.random.default_rng(seed + 10_000)
        dim = int(rng.choice([64, 128, 256, 512]))
        tasks += [
            probe_task(seed, dim=dim, frames=int(rng.choice([4, 8, 16])), classes=int(rng.integers(5, 16)),
                       multi_label=True, noise=float(rng.uniform(12, 22))),
            probe_task(seed + 1, dim=dim, frames=int(rng.choice([4, 8, 16])), classes=int(rng.integers(4, 12)),
                       multi_label=False, noise=float(rng.uniform(8, 16))),
            fine_task(seed + 2, dim=int(rng.choice([64, 128])), frames=16, pairs=int(rng.integers(4, 8)),
                      noise=float(rng.uniform(10, 16))),
            sparse_task(seed + 3, dim=int(rng.choice([64, 128, 256])), frames=int(rng.choice([32, 48, 64])),
                        classes=int(rng.integers(4, 9)), amplitude=float(rng.uniform(2.4, 3.2))),
            xor_task(seed + 4, dim=int(rng.choice([8, 16])), frames=8, classes=int(rng.integers(3, 7)), noise=0.3),
            order_task(seed + 5, dim=int(rng.choice([16, 64])), frames=int(rng.choice([12, 24])),
                       events=int(rng.choice([2, 3]))),
            weak_view_task(seed + 6, dim=int(rng.choice([64, 128])), frames=8, classes=int(rng.integers(6, 12)),
                           nuisance=float(rng.uniform(0.5, 1.0))),
        ]  # fmt: skip
    return tasks
