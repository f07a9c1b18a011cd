"""The trainer's train input through the tf.data service (`datasets.train.service`).

The one entry point the trainer calls; the service mechanics (jobs, passes,
watchdog) live in `klassterfork.data.runtime.service`.
"""

import os

from klassterfork.data.runtime import service
from klassterfork.training import builders


def trainer_input_fn(block, info, source, key, *, global_batch, seed, start_step,
                     run_dir, log=print, watchdog=True, bad_records=None):
    """`dataset_fn` for `distribute_datasets_from_function` through the service.

    Checks the `service` block, waits up to `timeout_s` for the dispatcher
    (a located error naming the address otherwise), and returns the service
    input: the workers run `builders.make_train_dataset` of this block.

    Args:
        block: dict. `datasets.train`, with `service`.
        info: `builders.DatasetInfo`.
        source, key: for located errors.
        global_batch: int.
        seed: int. The run's seed.
        start_step: int. The step the run (re)starts at.
        run_dir: str. The stage folder; the job name derives from it.
        log, watchdog: see `service.service_input_fn`.
        bad_records: `bad_records.BadRecordLog` or None. The service workers
            drop a record that does not parse or decode before the batch and
            report it as a file in `<run_dir>/bad_records.d` (they run the
            pipeline in their own processes); `BadRecordHook` names it in
            the log (`BadRecordLog.collect`). The records the log names are
            skipped. None: a bad record stops the run. Defaults to None.

    Returns:
        callable `InputContext -> tf.data.Dataset`.
    """
    config = service.service_config(block, source, key)
    service.wait_for_dispatcher(config["address"], config["timeout_s"], source=source,
                                key=f"{key}.service")
    # A resumed run gets a new seed (see `service.run_seed`), from the block's
    # `seed` when it sets one.
    seed = int(block.get("seed", seed))
    pipeline_block = {k: v for k, v in block.items() if k not in ("service", "seed")}

    def make_dataset(run_seed, placement):
        if bad_records is not None:
            placement = {**placement, "bad_records": bad_records,
                         "bad_records_dir": os.path.join(run_dir, "bad_records.d")}
        return builders.make_train_dataset(pipeline_block, info, source, key,
                                           seed=run_seed, placement=placement)

    job_name = config["job_name"] or service.default_job_name(run_dir)
    return service.service_input_fn(
        make_dataset, config, global_batch=global_batch, seed=seed,
        start_step=start_step, job_name=job_name, log=log, watchdog=watchdog,
    )
