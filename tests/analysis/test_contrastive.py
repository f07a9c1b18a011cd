"""Contrastive-group parser (real SSv2 file) and score (hand + loop refs)."""

from pathlib import Path

import numpy as np
import pytest

from klassterfork.analysis.contrastive import (
    ContrastiveGroup,
    contrastive_group_score,
    parse_groups,
)
from klassterfork.evaluation.predictions import read_class_names

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SSV2 = SHARED_DATA / "annotations" / "ssv2"


@pytest.fixture(scope="module")
def ssv2_groups():
    if not SSV2.is_dir():
        pytest.skip(f"shared data not found at {SSV2}")
    names = read_class_names(SSV2 / "something-something-v2-labels.json")
    return names, parse_groups(SSV2 / "contrastive_groups_list.txt", names)


def test_real_ssv2_groups_file(ssv2_groups):
    names, groups = ssv2_groups
    assert len(groups) == 69
    sizes = sorted(len(g.indices) for g in groups)
    assert sizes.count(2) == 61 and sizes[-1] == 6
    first = groups[0]
    assert first.names == ("Wiping something off of something",
                           "Pretending or failing to wipe something off of "
                           "something")
    assert [names[i] for i in first.indices] == list(first.names)
    # the three "# 0 0 1 ..." lines merge classes of the group that follows
    merged = {g.names[0]: g.merge for g in groups
              if g.merge != tuple(range(len(g.names)))}
    assert merged == {
        "Moving something across a surface until it falls down": (0, 0, 1, 1),
        "Poking something so it slightly moves": (0, 0, 1, 2),
        "Letting something roll along a flat surface": (0, 0, 1),
    }
    last = groups[-1]
    assert last.names[-1] == "Letting something roll down a slanted surface"


def test_parser_errors_name_file_and_line(tmp_path):
    path = tmp_path / "groups.txt"
    path.write_text("a\nb\n\n\nc\nzzz\n")
    with pytest.raises(ValueError, match="groups.txt:6: class 'zzz'"):
        parse_groups(path, ["a", "b", "c"])
    path.write_text("# 0 0 1\na\nb\n")
    with pytest.raises(ValueError, match="groups.txt:1: merge line has 3"):
        parse_groups(path, ["a", "b", "c"])


def test_parser_single_blank_line_and_end_marker(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("a\n\nb\n\n\n# comment\nc\nd\n\n\n## end\ne\nf\n")
    groups = parse_groups(path, list("abcdef"))
    assert [g.indices for g in groups] == [(0, 1), (2, 3)]


def test_score_by_hand(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("c0\nc1\n\n\n# 0 0 1\nc2\nc3\nc4\n")
    groups = parse_groups(path, ["c0", "c1", "c2", "c3", "c4", "c5"])
    scores = np.array([
        # group 0: label 0; full argmax is class 5, group argmax is 0: right
        [2.0, 1.0, 0.0, 0.0, 0.0, 9.0],
        [0.0, 3.0, 0.0, 0.0, 0.0, 0.0],  # label 0 -> predicts 1: wrong
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 1 -> predicts 0: wrong
        # group 1: label 2, predicts 3, merged (0, 0): right
        [0.0, 0.0, 1.0, 2.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 1.0, 0.0],  # label 4 -> tie, predicts 2: wrong
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 5: in no group
    ])
    labels = np.array([0, 0, 1, 2, 4, 5])
    out = contrastive_group_score(scores, labels, groups)
    assert out["per_group"][0]["accuracy"] == pytest.approx(1 / 3)
    assert out["per_group"][0]["majority_baseline"] == pytest.approx(2 / 3)
    assert out["per_group"][1]["accuracy"] == pytest.approx(1 / 2)
    assert out["per_group"][1]["majority_baseline"] == pytest.approx(1 / 2)
    assert out["accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    base = (2 / 3 + 1 / 2) / 2
    assert out["majority_baseline"] == pytest.approx(base)
    assert out["cag_score"] == pytest.approx(
        (out["accuracy"] - base) / (1 - base))


def ref_score(scores, labels, groups):
    accs, bases = [], []
    for g in groups:
        true, pred = [], []
        for row, lab in zip(scores, labels):
            if lab not in g.indices:
                continue
            best = 0
            for p in range(1, len(g.indices)):
                if row[g.indices[p]] > row[g.indices[best]]:
                    best = p
            true.append(g.merge[g.indices.index(lab)])
            pred.append(g.merge[best])
        if not true:
            continue
        accs.append(sum(t == p for t, p in zip(true, pred)) / len(true))
        bases.append(max(true.count(t) for t in set(true)) / len(true))
    return sum(accs) / len(accs), sum(bases) / len(bases), len(accs)


def test_score_matches_loop_on_real_groups(ssv2_groups):
    names, groups = ssv2_groups
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(600, len(names))).astype(float)
    labels = rng.integers(0, len(names), size=600)
    labels[np.isin(labels, groups[0].indices)] = 0  # group 0: no sample
    out = contrastive_group_score(scores, labels, groups)
    acc, base, scored = ref_score(scores, labels, groups)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["majority_baseline"] == pytest.approx(base)
    assert out["num_groups"] == 69 and out["num_groups_scored"] == scored
    assert scored == 68  # group 0 has no sample: excluded from the means


def test_group_without_samples_is_nan():
    group = ContrastiveGroup(names=("a", "b"), indices=(0, 1), merge=(0, 1))
    out = contrastive_group_score(np.zeros((1, 3)), [2], [group])
    assert out["num_groups_scored"] == 0
    assert np.isnan(out["per_group"][0]["accuracy"])
    assert np.isnan(out["accuracy"])
