"""Run a call in a forked child with a deadline, so that a regression fails instead of hanging.

``signal.alarm`` cannot interrupt pymatgen's compiled neighbour search, which
is where bad structures used to hang; a child process can be killed.
"""

from __future__ import annotations

import multiprocessing
import re

import pytest

DEADLINE_S = 60.0  # each call takes milliseconds; the margin is for a loaded machine


def run_bounded(function, *args, deadline: float = DEADLINE_S):
    """``function(*args)`` in a forked child: ``("ok", result)`` or ``(exception name, message)``.

    The result must pickle. Fails the test if the child has not answered by ``deadline``.
    """
    context = multiprocessing.get_context("fork")  # the child inherits the arguments unpickled
    receiver, sender = context.Pipe(duplex=False)

    def child():
        try:
            sender.send(("ok", function(*args)))
        except BaseException as exc:  # noqa: B036 - report whatever it was to the parent
            sender.send((type(exc).__name__, str(exc)))

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        if not receiver.poll(deadline):
            pytest.fail(f"{getattr(function, '__name__', function)} ran past {deadline} s")
        return receiver.recv()
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def transform_bounded(items, **params):
    """``CrystalGraphTransformer(**params).fit_transform(items)`` in a child, with a deadline."""
    from skgnn import CrystalGraphTransformer

    def transform():
        graphs = CrystalGraphTransformer(**params).fit_transform(items)
        return [(g.edge_src, g.edge_dst, g.edge_length) for g in graphs]

    return run_bounded(transform)


def assert_refused(items, match: str, **params) -> None:
    """The transform raises ``StructureError`` matching ``match``, within the deadline."""
    kind, message = transform_bounded(items, **params)
    assert kind == "StructureError", (kind, message)
    assert re.search(match, message), message
