"""One MultiWorkerMirrored worker reading one pass of the id dataset through
the tf.data service, as the trainer's input does (`distribute_datasets_from_
function` + `service.service_input_fn`); writes the video ids it received.
Usage: TF_CONFIG=... python service_mwms_run.py DATA_DIR ADDRESS OUT.json
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

from klassterfork.training import strategy as strategies  # noqa: E402
from tests.training.test_data_service import id_input_fn  # noqa: E402


def main(data_dir, address, out_path):
    strategy = strategies.make_strategy("multi_worker")
    fn, _ = id_input_fn(data_dir, address, "mwms-pass")
    dist = strategy.distribute_datasets_from_function(fn)
    ids = []
    for _, labels in dist:  # one pass: ends when the job's data is used up
        for local in strategy.experimental_local_results(labels):
            ids.extend(int(v) for v in local.numpy())
    with open(out_path, "w") as f:
        json.dump(ids, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
