"""One worker of the 2-process MultiWorkerMirroredStrategy test.

Trains the config's single stage through the same `Stage` API as kf-train and
dumps this worker's final weights, so the test can compare the two workers.
Usage: TF_CONFIG=... python multi_worker_run.py CONFIG OUT.npz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

from klassterfork.config.loader import load  # noqa: E402
from klassterfork.training import strategy as strategies  # noqa: E402
from klassterfork.training.trainer import Stage  # noqa: E402


def main(config_path, out_path):
    stages, source = load(config_path)
    strategy = strategies.make_strategy("multi_worker")
    experiment_dir = stages[0]["meta"]["experiment_dir"]
    stage = Stage(stages[0], source, experiment_dir=experiment_dir, stage_index=0,
                  strategy=strategy)
    np.savez(out_path + ".initial.npz",
             **{f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(stage.model.weights)})
    stage.train()
    np.savez(out_path, **{f"w{i}": np.asarray(v.numpy())
                          for i, v in enumerate(stage.model.weights)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
