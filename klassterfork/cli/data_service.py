"""`kf-data-service`: run a tf.data service dispatcher or worker.

    kf-data-service dispatcher --port 5050 [--work-dir DIR]
    kf-data-service worker --dispatcher HOST:5050 [--port 5051] [--host NAME]

Each logs one line when ready and stops cleanly on SIGTERM / SIGINT. See
docs/clusters.md.
"""

import argparse
import os
import sys


def parse_args(argv):
    # One parser, the role a positional (no subparsers): every flag is then
    # an option of this parser, as the docs checker (tests/test_docs.py) reads it.
    parser = argparse.ArgumentParser(prog="kf-data-service",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("dispatcher", "worker"),
                        help="dispatcher: the coordinator; worker: a CPU worker that "
                        "runs the input graphs")
    parser.add_argument("--port", type=int, default=None,
                        help="port to listen on (required for the dispatcher; a worker "
                        "picks a free one by default)")
    parser.add_argument(
        "--work-dir", help="dispatcher: journal folder (fault-tolerant mode): a "
        "dispatcher restarted with the same folder and port recovers its jobs")
    parser.add_argument("--worker-timeout-ms", type=int, default=10000,
                        help="dispatcher: drop (and log) a worker silent this long "
                        "(default 10000)")
    parser.add_argument("--dispatcher",
                        help="worker: HOST:PORT of the dispatcher (required)")
    parser.add_argument("--host", default="localhost",
                        help="worker: name or IP the trainers reach it by (default "
                        "localhost; on a cluster the pod IP or host name)")
    parser.add_argument("--heartbeat-ms", type=int, default=2000,
                        help="worker: heartbeat interval (default 2000)")
    args = parser.parse_args(argv)
    if args.role == "dispatcher" and args.port is None:
        parser.error("dispatcher needs --port")
    if args.role == "worker" and not args.dispatcher:
        parser.error("worker needs --dispatcher HOST:PORT")
    other = "worker" if args.role == "dispatcher" else "dispatcher"
    for flag in ("dispatcher", "host") if other == "worker" else ("work_dir",):
        if getattr(args, flag) != parser.get_default(flag):
            parser.error(f"--{flag.replace('_', '-')} is a {other} option")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # The dispatcher's worker log is TensorFlow's INFO lines ("Registering new
    # worker at address ...", "Lost worker ... due to timeout"), so it logs at
    # INFO whatever the environment says; a worker only warns.
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if args.role == "dispatcher" else level
    from klassterfork.data.runtime import service  # TensorFlow loads here, after --help

    def log(line):
        print(f"kf-data-service {args.role}: {line}", flush=True)

    if args.role == "dispatcher":
        server = service.start_dispatcher(args.port, args.work_dir,
                                          worker_timeout_ms=args.worker_timeout_ms)
        mode = (f"fault-tolerant, journal {args.work_dir}" if args.work_dir
                else "no journal: a restart loses its jobs")
        service.serve(server, f"ready on {server.target} ({mode})", log=log)
        return 0
    from klassterfork.data.runtime import allocator  # the worker decodes the records

    log(allocator.describe(allocator.tune_for_records()))
    try:
        server = service.start_worker(args.dispatcher, args.port or 0, host=args.host,
                                      heartbeat_interval_ms=args.heartbeat_ms)
    except Exception as err:  # TF raises its own OpError subclasses here
        log(f"cannot start: {err}")
        return 1
    service.serve(server, f"ready on {args.host}:{server._address.rsplit(':', 1)[1]}, "
                  f"dispatcher {args.dispatcher}", log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
