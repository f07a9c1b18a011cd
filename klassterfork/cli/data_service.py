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
    parser = argparse.ArgumentParser(prog="kf-data-service",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    dispatcher = sub.add_parser("dispatcher", help="the service's coordinator")
    dispatcher.add_argument("--port", type=int, required=True, help="port to listen on")
    dispatcher.add_argument(
        "--work-dir", help="journal folder: fault-tolerant mode, so a dispatcher "
        "restarted with the same folder and port recovers its datasets and jobs")
    dispatcher.add_argument("--worker-timeout-ms", type=int, default=10000,
                            help="drop (and log) a worker silent this long (default 10000)")
    worker = sub.add_parser("worker", help="a CPU worker that runs the input graphs")
    worker.add_argument("--dispatcher", required=True, help="HOST:PORT of the dispatcher")
    worker.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    worker.add_argument("--host", default="localhost",
                        help="name or IP the trainers reach this worker by "
                        "(default: localhost; on a cluster the pod IP or host name)")
    worker.add_argument("--heartbeat-ms", type=int, default=2000,
                        help="heartbeat interval (default 2000)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from klassterfork.data import service  # TensorFlow loads here, after --help

    def log(line):
        print(f"kf-data-service {args.role}: {line}", flush=True)

    if args.role == "dispatcher":
        server = service.start_dispatcher(args.port, args.work_dir,
                                          worker_timeout_ms=args.worker_timeout_ms)
        mode = (f"fault-tolerant, journal {args.work_dir}" if args.work_dir
                else "no journal: a restart loses its jobs")
        service.serve(server, f"ready on {server.target} ({mode})", log=log,
                      count_workers=server._num_workers)
        return 0
    try:
        server = service.start_worker(args.dispatcher, args.port, host=args.host,
                                      heartbeat_interval_ms=args.heartbeat_ms)
    except Exception as err:  # TF raises its own OpError subclasses here
        log(f"cannot start: {err}")
        return 1
    service.serve(server, f"ready on {args.host}:{server._address.rsplit(':', 1)[1]}, "
                  f"dispatcher {args.dispatcher}", log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
