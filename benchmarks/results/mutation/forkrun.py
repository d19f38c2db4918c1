"""Run pytest for mutmut without paying the import of torch/pymatgen/skorch per mutant.

``python forkrun.py serve`` imports the heavy third-party packages once and
listens on a Unix socket; ``python forkrun.py -- <pytest args>`` (mutmut's
``--runner``) asks it to fork a child that imports ``skgnn`` afresh from the
working directory (so it sees the mutant on disk), runs ``pytest.main`` and
returns its exit code. Bytecode caches are neither read nor written by the
child, so a mutant of the same size written within the same second as the
previous one can never be served from a stale ``.pyc``.
"""

import json
import os
import signal
import socket
import sys

SOCK = os.environ.get("FORKRUN_SOCK", "/tmp/skgnn-forkrun.sock")
TIMEOUT = float(os.environ.get("FORKRUN_TIMEOUT", "120"))


def serve() -> None:
    import hypothesis  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pymatgen.core  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.base  # noqa: F401
    import skorch  # noqa: F401
    import torch

    torch.set_num_threads(1)
    assert not any(m == "skgnn" or m.startswith("skgnn.") for m in sys.modules)
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCK)
    server.listen(1)
    print(f"forkrun serving on {SOCK}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            rc = run_child(request)
            conn.sendall(f"{rc}\n".encode())


def run_child(request: dict) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            sys.dont_write_bytecode = True
            sys.pycache_prefix = "/nonexistent-forkrun-pycache"  # never read a stale .pyc
            os.chdir(request["cwd"])
            sys.path.insert(0, request["cwd"])
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            import pytest

            rc = pytest.main(request["args"])
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc))
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(99)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(int(TIMEOUT))
    _, status = os.waitpid(pid, 0)
    signal.alarm(0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 124


def client(args: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(SOCK)
    log = os.environ.get("FORKRUN_LOG", "/tmp/skgnn-forkrun.log")
    conn.sendall((json.dumps({"cwd": os.getcwd(), "args": args, "log": log}) + "\n").encode())
    rc = int(conn.makefile().readline())
    if rc:
        sys.stdout.write(open(log).read()[-3000:])
    return rc


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        sys.exit(client(sys.argv[2:] if sys.argv[1] == "--" else sys.argv[1:]))
