"""The tf.data service: dispatcher and worker servers, and the trainer's input
through them.

Why: a GPU host decodes JPEG clips with its own CPU cores only. TensorFlow's
tf.data service (`tf.data.experimental.service`) runs the same input graph on
any number of CPU-only workers; only the finished batches travel to the
trainer. Nothing here re-implements it: the servers are TensorFlow's
`DispatchServer` / `WorkerServer`, the trainer reads through
`tf.data.experimental.service.distribute`.

What the trainer gets with `datasets.train.service` (see docs/clusters.md):
- The workers run `pipeline.train_dataset` with this run's settings, batched
  per replica (uint8 clips when `standardize: "none"` hands uint8 to the
  model; float32 otherwise), repeated.
- Processing mode "distributed_epoch" (TF `ShardingPolicy.DYNAMIC`): the
  dispatcher hands out the shard files one at a time, pass after pass, each
  file of a pass to one worker, so no example is produced twice in a pass
  (unless a worker dies: the files it held are lost for that pass). Every
  input pipeline (one per MultiWorkerMirrored worker; its replicas take
  turns) is a consumer of the same named job and receives its own batches.
- Resume is NOT exact with the service: model, optimizer and step are
  restored, and the data starts a new pass in a new order (a new job,
  `...-step{S}`, seed mixed with S); the unconsumed rest of the interrupted
  pass is not revisited. The trainer's epochs count steps; a pass of the
  service does not line up with them.
- A lost worker is named by the dispatcher's log ("Lost worker HOST:PORT
  due to timeout", after `--worker-timeout-ms`); training goes on with the
  others.
- A watchdog ends the process (status `UNREACHABLE_EXIT`) with a message
  naming the address when a requested batch has not come for `timeout_s`
  seconds (no worker reachable, or no dispatcher), instead of waiting
  forever as the service client does.
"""

import hashlib
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from klassterfork import exit_codes
from klassterfork.config.loader import ConfigError

# Exit status of a trainer whose service stopped answering (see `Watchdog`):
# kf-train's "workers lost" status, as the remedy is the same: bring the
# (service) workers back, then resume with -r.
UNREACHABLE_EXIT = exit_codes.WORKER_LOST
# Config `mode` -> TensorFlow's sharding policy. "parallel_epochs" (every
# worker runs the whole dataset) is refused: the workers run one graph with
# one seed, so each would produce the same clips in the same order.
MODES = {"distributed_epoch": tf.data.experimental.service.ShardingPolicy.DYNAMIC}
SERVICE_DEFAULTS = {
    "address": None,
    "mode": "distributed_epoch",
    "job_name": None,
    "timeout_s": 60.0,
    "compression": "AUTO",
}
COMPRESSIONS = ("AUTO", None)
# Set by the service input for the workers' graph; a config must not.
SERVICE_SET_KEYS = ("repeat", "drop_remainder")


# ---- servers -----------------------------------------------------------------
def start_dispatcher(port, work_dir=None, *, worker_timeout_ms=10000,
                     job_gc_timeout_ms=None, check_interval_ms=1000):
    """Starts a `tf.data.experimental.service.DispatchServer` on `port`.

    With `work_dir` the dispatcher runs in fault-tolerant mode: it journals
    registered datasets and jobs there before answering, so a dispatcher
    restarted with the same `work_dir` (and port) recovers them and the
    consumers and workers carry on.

    Args:
        port: int. 0 picks a free port.
        work_dir: str or None. Journal folder. Defaults to None.
        worker_timeout_ms: int or None. A worker silent this long is dropped
            and its count change logged by `serve`. Defaults to 10000
            (TensorFlow's own default is 10 minutes).
        job_gc_timeout_ms: int or None. Unused jobs are deleted after this
            (TensorFlow's default when None).
        check_interval_ms: int. How often the dispatcher looks for missing
            workers and unused jobs. Defaults to 1000 (TensorFlow: 10 min).

    Returns:
        `DispatchServer`, started.
    """
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir),
        worker_timeout_ms=worker_timeout_ms, job_gc_timeout_ms=job_gc_timeout_ms,
        job_gc_check_interval_ms=check_interval_ms,
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=0, *, host="localhost", heartbeat_interval_ms=2000):
    """Starts a `tf.data.experimental.service.WorkerServer`.

    Args:
        dispatcher: str. "host:port" (or "grpc://host:port") of the dispatcher.
        port: int. 0 picks a free port. Defaults to 0.
        host: str. The name the consumers reach this worker by (its pod IP
            or host name on a cluster). Defaults to "localhost".
        heartbeat_interval_ms: int or None. Defaults to 2000 (well inside
            the dispatcher's 10 s worker timeout; TensorFlow's is 30 s).

    Returns:
        `WorkerServer`, started.
    """
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=strip_protocol(dispatcher), worker_address=f"{host}:%port%",
        port=int(port), heartbeat_interval_ms=heartbeat_interval_ms,
    )
    return tf.data.experimental.service.WorkerServer(config)


def serve(server, ready_line, *, poll_s=0.5, log=print):
    """Logs `ready_line`, then waits for SIGTERM / SIGINT and stops `server`.

    The servers' `join()` blocks in C++ where Python signal handlers never
    run, so the main thread sleeps in short steps instead.

    Returns:
        int. The signal number that stopped the server.
    """
    received = []

    def on_signal(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log(ready_line)
    try:
        while not received:
            time.sleep(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    server.stop()
    log(f"stopped on {signal.Signals(received[0]).name}")
    return received[0]


def strip_protocol(address):
    return address.split("://", 1)[1] if "://" in address else address


# ---- config ------------------------------------------------------------------
def service_config(block, source, key):
    """The `datasets.train.service` block with defaults, checked.

    Raises:
        ConfigError: unknown key, missing or malformed address, unknown mode,
            or a pipeline key the service sets itself.
    """
    service = block.get("service")
    if not isinstance(service, dict):
        raise ConfigError(source, f"{key}.service", "must be a dict like "
                          '{address: "grpc://host:port"}. Received: ' f"{service!r}")
    for name in service:
        if name not in SERVICE_DEFAULTS:
            raise ConfigError(source, f"{key}.service.{name}", "unknown key. Accepted: "
                              f"{', '.join(SERVICE_DEFAULTS)}")
    config = {**SERVICE_DEFAULTS, **service}
    address = config["address"]
    if not isinstance(address, str) or not _split_address(address):
        raise ConfigError(source, f"{key}.service.address", "must be "
                          f'"grpc://host:port". Received: {address!r}')
    if config["mode"] not in MODES:
        raise ConfigError(
            source, f"{key}.service.mode", f"must be one of {list(MODES)}. Received: "
            f"{config['mode']!r} ('parallel_epochs' would have every worker run the "
            "same seeded graph and produce the same clips)")
    if config["compression"] not in COMPRESSIONS:
        raise ConfigError(source, f"{key}.service.compression", "must be 'AUTO' or "
                          f"null. Received: {config['compression']!r}")
    if not (isinstance(config["timeout_s"], (int, float)) and config["timeout_s"] > 0):
        raise ConfigError(source, f"{key}.service.timeout_s", "must be a positive "
                          f"number of seconds. Received: {config['timeout_s']!r}")
    for name in SERVICE_SET_KEYS:
        if name in block:
            raise ConfigError(source, f"{key}.{name}", "is set by the data service "
                              "input (the workers repeat the data, full batches); "
                              "remove it.")
    if not address.startswith("grpc://"):
        config["address"] = "grpc://" + address
    return config


def _split_address(address):
    rest = strip_protocol(address)
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def default_job_name(run_dir):
    """`kf-{experiment}-{stage}-{digest}` from a stage folder
    (`experiment_dir/stage{i}`): the same on every worker of a run.

    The digest of the folder as configured keeps two experiments with the
    same folder name apart on one dispatcher.
    """
    path = os.path.normpath(str(run_dir))
    stage = os.path.basename(path)
    name = os.path.basename(os.path.dirname(path)) or "run"
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:8]
    return f"kf-{name}-{stage}-{digest}"


def run_seed(seed, start_step):
    """The workers' pipeline seed for a run (re)started at `start_step`.

    A fresh run keeps `seed`; a resumed one gets a seed mixed from (seed,
    start step) by `np.random.SeedSequence`: a new order and new crops.
    """
    if start_step == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(start_step)])
    return int(state.generate_state(1, np.uint32)[0] >> 1)


def wait_for_dispatcher(address, timeout_s, *, source=None,
                        key="datasets.train.service"):
    """Raises a located ConfigError unless `address` accepts a connection
    within `timeout_s` seconds (the service client itself retries forever)."""
    host, port = _split_address(address)
    deadline = time.monotonic() + float(timeout_s)
    error = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            error = err
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise ConfigError(
        source, f"{key}.address", f"no tf.data service dispatcher answers at "
        f"{address} after {timeout_s:g} s ({error}). Start one with `kf-data-service "
        f"dispatcher --port {port}` and workers with `kf-data-service worker "
        f"--dispatcher {host}:{port}`, or fix the address.")


# ---- the trainer's input -------------------------------------------------------
def service_input_fn(make_dataset, config, *, global_batch, seed, start_step, job_name,
                     log=print, watchdog=True, repeat=True):
    """The `dataset_fn` of `distribute_datasets_from_function` through the service.

    One job per run (per start step), shared by every consumer. The workers
    run the repeated train pipeline; the dispatcher hands out its shard files
    pass after pass (TF's dynamic sharding), each file of a pass to one
    worker. Why one endless job and not one finite job per pass: a finite
    job ends only when every task of it ends, and the task of a killed
    worker never does, so a lost worker would stall the run at the next
    pass boundary; an endless job just goes on with the other workers.

    Args:
        make_dataset: callable `(seed, placement) -> tf.data.Dataset`: the train
            pipeline (`builders.make_train_dataset` with this run's block),
            built with `placement` for the workers.
        config: dict. `service_config`'s result.
        global_batch: int. Clips per global step.
        seed: int. The run's seed.
        start_step: int. Global step the run starts at (resume).
        job_name: str. Shared by every consumer of the run.
        log: callable for the one-line statement of what resume means.
        watchdog: bool. Wrap the consumer in a `Watchdog`.
        repeat: bool. False: one pass, the short last batch of each worker
            kept (tests count the examples of a pass). Defaults to True.

    Returns:
        callable `InputContext -> tf.data.Dataset` of per-replica batches.
    """
    job = f"{job_name}-step{int(start_step)}"
    log(f"data service: {config['address']} job {job}, mode {config['mode']}: each "
        "pass hands every shard file to one worker; resume is not exact: it starts a "
        "new pass in a new order (the rest of the interrupted pass is skipped)")
    dog = Watchdog(config["address"], config["timeout_s"]) if watchdog else None

    def dataset_fn(context):
        # Each worker numbers what it reads from 0: key the draws by record,
        # or the k-th example of every worker would draw alike.
        placement = {"batch_size": context.get_per_replica_batch_size(global_batch),
                     "example_key": "record"}
        if not repeat:
            placement.update(repeat=False, drop_remainder=False)
        remote = make_dataset(run_seed(seed, start_step), placement)
        ds = remote.apply(tf.data.experimental.service.distribute(
            processing_mode=MODES[config["mode"]], service=config["address"],
            job_name=job, compression=config["compression"],
        ))
        return ds if dog is None else dog.wrap(ds)

    return dataset_fn


class Watchdog:
    """Ends the process when a requested batch has not come for `timeout_s`.

    The service client waits forever for workers (they may come back), and
    a blocked C++ `GetNext` cannot be interrupted from Python, so the
    watchdog thread prints a message naming the address and calls
    `os._exit(UNREACHABLE_EXIT)`. Checkpoints are written atomically, so the
    last one stays usable. It counts only while a batch is requested and
    not delivered: time spent in evaluation or checkpointing (no request)
    does not count.
    """

    def __init__(self, address, timeout_s, *, exit_fn=None, stream=None):
        self.address, self.timeout_s = address, float(timeout_s)
        self._exit = exit_fn or os._exit
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._waiting_since = None
        self._thread = None

    def wrap(self, ds):
        """`ds` with a request stamp before each element and a delivery stamp after.

        `zip` asks its first input (the stamp) before the second (the
        service), so the stamp marks the moment a batch is requested.
        """
        requests = tf.data.Dataset.range(2**62).map(
            lambda i: tf.py_function(self._requested, [i], tf.int64))

        def delivered(request, batch):
            del request
            stamp = tf.py_function(self._delivered, [], tf.int64)
            with tf.control_dependencies([stamp]):
                return tf.nest.map_structure(tf.identity, batch)

        # No prefetch or parallel map between the stamps and the service:
        # either would stamp requests ahead of time, and the delivery of the
        # batch before would clear them.
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        options.experimental_optimization.map_parallelization = False
        return tf.data.Dataset.zip((requests, ds)).map(delivered).with_options(options)

    def _requested(self, i):
        with self._lock:
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
        self._start()
        return i

    def _delivered(self):
        with self._lock:
            self._waiting_since = None
        return np.int64(0)

    def _start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name="kf-data-service-watchdog")
            self._thread.start()

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout_s / 4))
            with self._lock:
                since = self._waiting_since
            if since is not None and time.monotonic() - since > self.timeout_s:
                print(
                    f"kf-train: data service error: no batch from the tf.data service "
                    f"at {self.address} for {self.timeout_s:g} s "
                    "(datasets.train.service.timeout_s): no worker reachable, or the "
                    "dispatcher gone. Check the `kf-data-service worker --dispatcher "
                    "...` processes and the dispatcher's log; resume with -r. "
                    f"Exiting with status {UNREACHABLE_EXIT}.",
                    file=self._stream, flush=True)
                sys.stdout.flush()
                self._exit(UNREACHABLE_EXIT)
                return


# ---- local processes (tests, benchmarks, one-machine runs) ---------------------
class LocalService:
    """A dispatcher and `num_workers` workers as `kf-data-service` processes on
    127.0.0.1, each started and waited for until it logs its ready line.

    Use as a context manager; on exit every process still running gets
    SIGTERM (then SIGKILL after 10 s). `log_dir` keeps each process's output
    in `{dispatcher,worker0,...}.log`.
    """

    def __init__(self, num_workers, log_dir, *, work_dir=None, port=0,
                 worker_timeout_ms=None, heartbeat_ms=None, ready_timeout_s=120.0,
                 env=None):
        self.num_workers, self.log_dir = int(num_workers), str(log_dir)
        self.work_dir, self.port = work_dir, int(port) or free_port()
        self.worker_timeout_ms, self.heartbeat_ms = worker_timeout_ms, heartbeat_ms
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.dispatcher, self.workers = None, []

    @property
    def address(self):
        return f"grpc://127.0.0.1:{self.port}"

    def __enter__(self):
        os.makedirs(self.log_dir, exist_ok=True)
        self.start_dispatcher()
        for _ in range(self.num_workers):
            self.start_worker()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, name, args):
        import subprocess

        log_path = os.path.join(self.log_dir, f"{name}.log")
        out = open(log_path, "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "klassterfork.cli.data_service", *args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env)
        out.close()
        proc.log_path = log_path
        return proc

    def _wait_ready(self, proc, skip_lines=0):
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            with open(proc.log_path) as f:
                lines = f.read().splitlines()[skip_lines:]
            if any(": ready on " in line for line in lines):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with status {proc.returncode}: "
                                   + "\n".join(lines[-5:]))
            time.sleep(0.2)
        raise RuntimeError(f"{proc.args} not ready after {self.ready_timeout_s} s")

    def _log_lines(self, path):
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return len(f.read().splitlines())

    def start_dispatcher(self):
        args = ["dispatcher", "--port", str(self.port)]
        if self.work_dir:
            args += ["--work-dir", str(self.work_dir)]
        if self.worker_timeout_ms:
            args += ["--worker-timeout-ms", str(self.worker_timeout_ms)]
        skip = self._log_lines(os.path.join(self.log_dir, "dispatcher.log"))
        self.dispatcher = self._spawn("dispatcher", args)
        self._wait_ready(self.dispatcher, skip)
        return self.dispatcher

    def start_worker(self):
        args = ["worker", "--dispatcher", f"127.0.0.1:{self.port}",
                "--host", "127.0.0.1"]
        if self.heartbeat_ms:
            args += ["--heartbeat-ms", str(self.heartbeat_ms)]
        proc = self._spawn(f"worker{len(self.workers)}", args)
        self._wait_ready(proc)
        self.workers.append(proc)
        return proc

    def stop(self):
        procs = [p for p in [self.dispatcher, *self.workers] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except Exception:  # subprocess.TimeoutExpired: a stuck server
                p.kill()
                p.wait()


def free_port():
    """A TCP port free on 127.0.0.1 now (the OS may hand it out again later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
