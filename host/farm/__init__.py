"""A farm: one ``fcnseg segment`` batch spread over a Dask distributed cluster (issue 17).

``fcnseg segment INPUTS -o OUT --local-workers N`` starts a ``distributed.LocalCluster`` of ``N``
worker processes on this machine (bound to 127.0.0.1, no dashboard); ``--scheduler ADDRESS``
joins an existing cluster whose workers were started as::

    dask worker ADDRESS --nthreads 1 --resources FPGA=1     # one per board (or per PC: sim)

Who does what:

- **The client** (:mod:`fcnseg.host.farm.client`, the ``fcnseg segment`` process) verifies the
  package, checks the output folder, writes ``classes.json`` and skips finished images exactly
  like a local run (:meth:`fcnseg.host.batch.Batch.prepare`), then submits **one task per image**
  (also for images segmented in strips: one task does the whole image) and collects each
  image's record into the batch's one :class:`~fcnseg.host.summary.BatchSummary` (``--json``:
  each record names its ``worker``).
- **Each worker owns its accelerator** (:mod:`fcnseg.host.farm.worker`): a worker plugin,
  registered by the client with the package path, backend and options, opens the
  :class:`~fcnseg.host.segmenter.Segmenter` once per worker (the overlay on a board, the
  simulator on a PC); a task takes one ``FPGA`` resource, so a worker runs one image at a time.
  The task is :meth:`fcnseg.host.batch.Batch.one`: the same claim, atomic group (mask last) and
  failure rules as a local run, so the outputs are byte for byte a local run's.
- **Storage**: inputs and ``OUT`` must be on storage every worker sees at the same path (a shared
  folder); the client sends absolute paths. A worker that cannot read an input or write ``OUT``
  says so in that image's one line, which names the worker.

Exactly once, in effect:

- a task is idempotent: an image whose mask exists when its task runs is not written again
  (``another-run``: written since the batch started, by another run or by an attempt of this
  batch whose worker was lost after writing it), and claims (:mod:`fcnseg.host.claims`) keep two
  workers from writing one image;
- a worker that dies (SIGKILL, a board losing power) has its tasks retried on the others, at most
  :data:`~fcnseg.host.farm.client.RETRIES` times; the retry removes the dead worker's temporaries
  and breaks its claim (its owner is provably gone on the same host; a claim of a worker on
  another host is broken by the age rule only, so its image waits for a later run);
- an image that fails (a bad file) fails once with its one-line error: the task returns the
  failure as its result instead of raising, so Dask does not retry it;
- Ctrl-C on the client cancels what has not started; tasks being written finish (the atomic
  group leaves complete outputs or none), and a re-run skips what exists.

Dask is imported only here, in the cluster code path (the ``cluster`` extra); ``fcnseg.host``
without ``--local-workers``/``--scheduler`` imports neither dask nor distributed.
"""
