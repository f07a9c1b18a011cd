"""Contrastive-group ("commonsense") score for Something-Something-v2.

The 20BN baseline ships `contrastive_groups_list.txt`: groups of SSv2 classes
that differ only in a fine detail (e.g. "Putting something onto something" vs
"Pretending to put something onto something"). Format, as read by the
baseline's notebook:

* one class name per line; groups are separated by two blank lines;
* a line `# 0 0 1 1` before a group merges the group's classes (same digit =
  same merged class, here the first two and the last two);
* other `#` lines are comments; a line starting with `##` ends the file.

Score: for each group, the videos whose label is in the group are classified
by the argmax of their scores restricted to the group's classes (ties: lower
position in the group first); group accuracy = fraction correct after merging;
score = mean over groups that have samples. The majority baseline of a group
is the share of its most frequent (merged) true class; `cag_score` rescales
the accuracy so that the baseline maps to 0 and perfect to 1:
(accuracy - baseline) / (1 - baseline).
"""

import dataclasses
import os

import numpy as np

from klassterfork import files
from klassterfork.evaluation.metrics import label_matrix


@dataclasses.dataclass(frozen=True)
class ContrastiveGroup:
    """One group: class `names`, their `indices`, and the `merge` ids
    (merge[i] = merged class of names[i]; range(len) when nothing merges)."""

    names: tuple
    indices: tuple
    merge: tuple


def parse_groups(path, class_names):
    """Reads a contrastive groups file.

    Args:
        path: str or Path. The groups file.
        class_names: list of str (index = class id), e.g. from
            `klassterfork.evaluation.predictions.read_class_names`.

    Returns:
        list of `ContrastiveGroup`, in file order.

    Raises:
        ValueError: `path:line:` for an unknown class name, a class listed
            twice in a group, or a merge line whose length differs from its
            group.
    """
    path = os.fspath(path)  # not Path: it would fold gs://b into gs:/b
    index = {name: i for i, name in enumerate(class_names)}
    groups, current, merge, blanks = [], [], None, 0

    def close():
        nonlocal current, merge
        if current:
            names = tuple(n for n, _ in current)
            if merge is not None and len(merge[0]) != len(names):
                raise ValueError(
                    f"{path}:{merge[1]}: merge line has {len(merge[0])} "
                    f"entries but its group has {len(names)} classes"
                )
            groups.append(ContrastiveGroup(
                names=names,
                indices=tuple(i for _, i in current),
                merge=tuple(merge[0]) if merge else tuple(range(len(names))),
            ))
        current, merge = [], None

    with files.open_file(path) as f:
        lines = f.read().splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("##"):
            break
        if not line:
            blanks += 1
            if blanks == 2:
                close()
            continue
        blanks = 0
        if line.startswith("#"):
            body = line[1:].split()
            if body and all(t.isdigit() for t in body):
                close()
                merge = ([int(t) for t in body], lineno)
            continue
        name = line.strip(",").strip('"').strip("'")
        if name not in index:
            raise ValueError(
                f"{path}:{lineno}: class {name!r} is not in the label list "
                f"({len(class_names)} classes)"
            )
        if any(name == n for n, _ in current):
            raise ValueError(f"{path}:{lineno}: class {name!r} listed twice")
        current.append((name, index[name]))
    close()
    return groups


def contrastive_group_score(scores, labels, groups):
    """Per-group accuracy of the argmax restricted to the group's classes.

    Args:
        scores: float (N, C) video scores (logits or probabilities).
        labels: int (N,) or (N, L) padded with -1 (a video counts in every
            group holding one of its labels).
        groups: list of `ContrastiveGroup`.

    Returns:
        dict with `accuracy` (mean group accuracy), `majority_baseline`
        (mean majority share), `cag_score` ((acc - base) / (1 - base); NaN
        when base == 1), `num_groups`, `num_groups_scored` (groups with
        samples; the means run over these) and `per_group`, a list of dicts
        (`names`, `num_samples`, `accuracy`, `majority_baseline`; NaN when
        the group has no samples).
    """
    scores = np.asarray(scores, dtype=np.float64)
    target = label_matrix(labels, scores.shape[1], scores.shape[0])
    per_group = []
    for g in groups:
        idx = np.array(g.indices)
        merge = np.array(g.merge)
        rows, pos = np.nonzero(target[:, idx])  # video, position in group
        if rows.size == 0:
            per_group.append({"names": list(g.names), "num_samples": 0,
                              "accuracy": float("nan"),
                              "majority_baseline": float("nan")})
            continue
        pred_pos = np.argmax(scores[rows][:, idx], axis=1)
        true_m, pred_m = merge[pos], merge[pred_pos]
        counts = np.bincount(true_m)
        per_group.append({
            "names": list(g.names),
            "num_samples": int(rows.size),
            "accuracy": float(np.mean(true_m == pred_m)),
            "majority_baseline": float(counts.max() / rows.size),
        })
    scored = [p for p in per_group if p["num_samples"] > 0]
    acc = float(np.mean([p["accuracy"] for p in scored])) if scored else \
        float("nan")
    base = float(np.mean([p["majority_baseline"] for p in scored])) \
        if scored else float("nan")
    cag = (acc - base) / (1 - base) if scored and base < 1 else float("nan")
    return {
        "accuracy": acc,
        "majority_baseline": base,
        "cag_score": float(cag),
        "num_groups": len(groups),
        "num_groups_scored": len(scored),
        "per_group": per_group,
    }
