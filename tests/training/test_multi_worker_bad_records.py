"""Bad records under MultiWorkerMirrored (issue 24), two real workers on
127.0.0.1: a corrupt train record is dropped in the pipeline and named once,
a corrupt validation record is named and evaluation finishes, and the run
ends with its full step count (before, the worker re-raised and exited 1)."""

import json
import os

import pytest

from tests.data.test_bad_records import corrupt_frame
from tests.training.test_preemption import start
from tests.training.test_trainer import free_ports
from tests.training.tiny_data import tiny_config, write_split


@pytest.mark.slow  # two MultiWorkerMirrored processes: about a minute on 2 cores
def test_two_workers_skip_and_name_a_corrupt_train_and_val_record(tmp_path):
    data = tmp_path / "data"
    train = write_split(str(data), "train", 16, seed=0, num_frames=4)
    val = write_split(str(data), "validation", 8, seed=1, num_frames=4)
    train_id = corrupt_frame(train[0], 2, 1)
    val_id = corrupt_frame(val[1], 1, 0)
    config = json.loads(tiny_config(data, tmp_path / "exp", epochs=2,
                                    strategy="multi_worker", checkpoint_every_steps=1000))
    for block in config["datasets"].values():
        block["frame_step"] = 1  # 4 frames of 4: the garbage frame is in every clip
    cfg = tmp_path / "c.hjson"
    cfg.write_text(json.dumps(config))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = [start(cfg, env={"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    stage = tmp_path / "exp" / "stage0"
    assert (stage / "DONE").read_text().strip() == "8"  # 16 videos / batch 4, 2 epochs
    entries = [json.loads(x) for x in open(stage / "bad_records.jsonl")]
    named = sorted((e.get("set", "train"), e["shard"], e["record"], e["video_id"])
                   for e in entries)
    assert named == [("train", os.path.basename(train[0]), 2, train_id),
                     ("val", os.path.basename(val[1]), 1, val_id)], entries
    rows = list(open(stage / "log.csv"))
    assert len(rows) == 3, rows  # the header and both epochs, evaluated
