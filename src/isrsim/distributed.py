"""Run isrsim chunks as Dask tasks (``isrsim generate --scheduler ADDRESS``, ``RunSpec(scheduler=)``).

The runner cuts a run into chunks of whole random-number blocks (see :mod:`isrsim.runner`);
every block draws from its own ``SeedSequence(seed, spawn_key=(stream, block))`` stream, so a
chunk gives the same events wherever it runs. Here each chunk becomes one Dask task that calls
:func:`isrsim.runner._run_chunk` with the run state passed **explicitly** (process object, seed
entropy, detector model, output directory, ...): nothing depends on module globals of the
submitting process, and several tasks may share a worker process (threads) safely.

* Dataset directories (``-o DIR``): each task writes its own ``part-NNNNN.parquet`` atomically
  into the directory (which must be visible to the workers, e.g. a shared file system) and
  returns only ``(part info, sampling stats)``; the runner records the parts in the manifest as
  they arrive, so an interrupted Dask run can be completed with ``--resume``.
* Single files (``-o file.parquet``): the tasks return Arrow tables, and the client writes them
  in order into the one file (the workers need no access to the output path; the network then
  carries the events).

Results are yielded in chunk order with a bounded number of tasks in flight (twice the
cluster's thread count), so client memory does not grow with the number of events.

Python API::

    from dask.distributed import Client
    from isrsim.runner import RunSpec, run

    client = Client("tcp://scheduler:8786")          # or Client(LocalCluster(...))
    spec = RunSpec(process="isr_mumu", params={"mass_range": [1.5, 3.4]}, beam=beam,
                   output=Path("run_dir"), seed=1, n_events=10**8, scheduler=client)
    run(spec)          # event for event identical to the same spec without scheduler
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from .exceptions import ConfigError

__all__ = ["check_scheduler", "execute_on_dask", "run_chunk_task"]


def run_chunk_task(state: dict[str, Any], chunk: tuple[int, int, int, int]) -> tuple[Any, Any]:
    """The Dask task: generate (simulate, write) one chunk with an explicit run ``state``.

    ``chunk`` is ``(first_block, n_blocks, n_total, chunk_index)`` as built by
    :func:`isrsim.runner.run`. Returns what :func:`isrsim.runner._run_chunk` returns: a
    ``(part info, stats dict)`` pair in dataset mode, else ``(pyarrow.Table, stats dict)``.
    """
    from .runner import _run_chunk

    return _run_chunk(*chunk, state=state)


def _client(scheduler: Any) -> tuple[Any, bool]:
    """(client, owned): connect to an address, or use a given ``distributed.Client``."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask is an optional dependency
        msg = ("scheduler = {!r} needs dask.distributed: pip install 'isrsim[dask]'"
               .format(scheduler if isinstance(scheduler, str) else type(scheduler).__name__))
        raise ConfigError(msg) from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        msg = (f"scheduler = {scheduler!r} is invalid: allowed a Dask scheduler address "
               "(e.g. tcp://host:8786) or a dask.distributed.Client")
        raise ConfigError(msg)
    try:
        return Client(scheduler.strip(), timeout="10s"), True
    except (OSError, TimeoutError, ValueError) as exc:
        msg = f"scheduler = {scheduler!r}: cannot connect to a Dask scheduler ({exc})"
        raise ConfigError(msg) from None


def check_scheduler(scheduler: Any) -> None:
    """Raise :class:`ConfigError` (one line) unless ``scheduler`` is a reachable Dask scheduler
    address or a ``dask.distributed.Client``; called by the runner before any output exists."""
    client, owned = _client(scheduler)
    if owned:
        client.close()


def execute_on_dask(scheduler: Any, state: dict[str, Any],
                    chunks: list[tuple[int, int, int, int]]) -> Iterator[tuple[Any, Any]]:
    """Run ``chunks`` as Dask tasks and yield their results in chunk order.

    Parameters
    ----------
    scheduler
        A scheduler address (``"tcp://host:8786"``; a client is opened and closed here) or a
        ``dask.distributed.Client`` (left open).
    state
        The run state built by :func:`isrsim.runner.run` (``process``, ``entropy``, ``weighted``,
        ``detector``, ``conversions``, ``compression`` and, for dataset directories,
        ``part_dir`` and ``part_meta``). Scattered once to all workers.
    chunks
        ``(first_block, n_blocks, n_total, chunk_index)`` tuples.

    Yields
    ------
    tuple
        ``(info, stats)`` per chunk, in the order of ``chunks`` (see :func:`run_chunk_task`).
    """
    if not chunks:
        return
    client, owned = _client(scheduler)
    try:
        n_threads = max(1, sum(client.nthreads().values()))
        window = 2 * n_threads
        token = uuid.uuid4().hex[:12]
        state_f = client.scatter(state, broadcast=True, hash=False)
        pending: dict[int, Any] = {}
        nxt = 0
        try:
            for i, c in enumerate(chunks):
                pending[i] = client.submit(run_chunk_task, state_f, c, pure=False,
                                           key=f"isrsim-chunk-{c[3]}-{token}")
                while len(pending) >= window or (i == len(chunks) - 1 and pending):
                    fut = pending.pop(nxt)
                    yield fut.result()
                    fut.release()
                    nxt += 1
        finally:
            for fut in pending.values():
                fut.cancel()
    finally:
        if owned:
            client.close()
