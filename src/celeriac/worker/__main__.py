"""Entry point of one worker process (started by the supervisor)."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
from pathlib import Path

from celeriac.logs import setup_logging
from celeriac.worker.process import WorkerProcess


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m celeriac.worker")
    parser.add_argument("address")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--queues", default="default")
    parser.add_argument("--name")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("--identity", type=bytes.fromhex, help="routing id, in hex")
    parser.add_argument("--control-fd", type=int, help="pipe to the supervisor")
    parser.add_argument("--keys", type=Path, help="CURVE key directory")
    parser.add_argument("--max-tasks-per-child", type=int)
    parser.add_argument("--max-memory-per-child", type=int, help="bytes")
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    for module in args.imports:
        importlib.import_module(module)
    worker = WorkerProcess(
        args.address,
        slots=args.nthreads,
        queues=tuple(q for q in args.queues.split(",") if q),
        name=args.name,
        identity=args.identity,
        control_fd=args.control_fd,
        keys=args.keys,
        max_tasks=args.max_tasks_per_child,
        max_memory=args.max_memory_per_child,
        parent_pid=args.parent_pid,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.request_close())
    signal.signal(signal.SIGINT, lambda *_: worker.request_close())
    try:
        worker.run()
    except Exception:
        logging.getLogger("celeriac.worker").exception("worker process failed")
        raise


if __name__ == "__main__":
    main()
