"""What `init_weights` is for (issue 22): pretrain, then fine-tune a smaller,
different task; K steps from the pretrained weights beat K steps from scratch.

Pretrain: a small R(2+1)D (tiny_data.tiny_config) on all 4 motion classes
(left-to-right, right-to-left, up, down), 64 training videos of 8 frames,
8 epochs at Adam 0.01 (128 steps); it reaches validation top-1 1.0.
Fine-tune: a new 2-class set, "up" vs "down" only, 8 training videos of 12
frames (other videos, other length, other class count), 32 validation
videos; K = 4 steps (2 epochs of 2 steps, batch 4) at Adam 0.01, either from
the pretrained `stage0/model.keras` via `init_weights` with
`exclude: ["logits"]` (the 2-class head stays initialized) or from scratch,
for train_loop.seed 1, 2, 3.

Measured on the project's 2-core x86_64 VM, TF 2.21, CPU (see BENCHMARKS.md,
"Pretrained weights (issue 22)"):

    seed  val top-1 pretrained  val top-1 scratch  1st-epoch loss pre / scratch
    1     1.000                 0.500              0.724 / 0.726
    2     1.000                 0.500              0.672 / 0.688
    3     1.000                 0.500              0.690 / 0.720

Mean top-1 1.000 vs 0.500 (margin 0.50); scratch after 4 steps is still at
chance. The test asserts half that margin (0.25) on the mean, and that the
pretrained start wins on at least 2 of the 3 seeds. The first-epoch (2-step)
training loss barely differs: the fresh head dominates it; the pretrained
start shows in the validation loss (0.53-0.57 vs 0.68-0.69 after 2 steps,
0.33-0.42 vs 0.65-0.69 after 4).
About 2 to 3 minutes on that machine.
"""

import csv
import json

import pytest

from klassterfork.cli.train import main
from tests.training.tiny_data import tiny_config, write_split

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3)
K_EPOCHS = 2  # 8 videos / batch 4 = 2 steps per epoch, so K = 4 steps
K_STEPS = 4
LEARNING_RATE = 0.01  # the same for both starts, and for pretraining
MEASURED_MARGIN = 0.50  # mean top-1 pretrained - scratch, measured (docstring)
ASSERTED_MARGIN = MEASURED_MARGIN / 2  # room for another machine's numerics


def write_run(root, name, data_dir, *, epochs, seed, init=None):
    """Writes `{name}.hjson` under `root` and runs it; the stage-0 folder."""
    config = json.loads(tiny_config(data_dir, root / name, epochs=epochs, seed=seed))
    config["optimizer"] = {"Adam": {"learning_rate": LEARNING_RATE}}
    if init is not None:
        config["init_weights"] = init
    path = root / f"{name}.hjson"
    path.write_text(json.dumps(config))
    assert main([str(path)]) == 0, name
    return root / name / "stage0"


def epoch_rows(stage_dir):
    with open(stage_dir / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(root, the pretrained stage-0 model path) after 4-class pretraining."""
    root = tmp_path_factory.mktemp("pretrain")
    four = (0, 1, 2, 3)
    write_split(str(root / "pre"), "train", 64, seed=10, classes=four)
    write_split(str(root / "pre"), "validation", 16, seed=11, classes=four)
    stage = write_run(root, "pretrain", root / "pre", epochs=8, seed=3)
    # The premise: pretraining learned the motions (measured 1.0).
    assert float(epoch_rows(stage)[-1]["val_top1"]) >= 0.9, epoch_rows(stage)[-1]
    return root, stage / "model.keras"


def fine_tune(root, model_path, seed, *, from_pretrained):
    """One K-step fine-tune; (val top-1 after K steps, first-epoch loss)."""
    name = f"{'pre' if from_pretrained else 'scratch'}_{seed}"
    init = {"path": str(model_path), "exclude": ["logits"]} if from_pretrained else None
    stage = write_run(root, name, root / "ft", epochs=K_EPOCHS, seed=seed, init=init)
    rows = epoch_rows(stage)
    assert int(rows[-1]["step"]) == K_STEPS, rows[-1]
    report = stage / "init_report.json"
    assert report.exists() == from_pretrained
    if from_pretrained:
        initialized = json.loads(report.read_text())["initialized"]
        assert sorted(i["name"] for i in initialized) == [
            "logits/bias",
            "logits/kernel",
        ]
    return float(rows[-1]["val_top1"]), float(rows[0]["loss"])


def test_pretrained_start_beats_scratch_after_k_steps(pretrained):
    root, model_path = pretrained
    up_down = (2, 3)
    write_split(str(root / "ft"), "train", 8, seed=20, classes=up_down, num_frames=12)
    write_split(
        str(root / "ft"), "validation", 32, seed=21, classes=up_down, num_frames=12
    )
    table = {}
    for seed in SEEDS:
        table[seed] = (
            fine_tune(root, model_path, seed, from_pretrained=True),
            fine_tune(root, model_path, seed, from_pretrained=False),
        )
    print("seed: (pretrained top-1, 1st-epoch loss), (scratch top-1, loss)")
    for seed, row in table.items():
        print(seed, row)
    pre = [table[s][0][0] for s in SEEDS]
    scratch = [table[s][1][0] for s in SEEDS]
    margin = (sum(pre) - sum(scratch)) / len(SEEDS)
    assert margin >= ASSERTED_MARGIN, (margin, table)
    assert sum(p > s for p, s in zip(pre, scratch)) >= 2, table
