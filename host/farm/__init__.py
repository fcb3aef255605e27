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
- a result lives on its worker until the client fetches it (at once: each finished task's
  result is fetched as it finishes, and dropped once merged), so a worker that dies in between
  has the task run again, which finds the mask: the client then takes the image's record from
  the event the first attempt sent the scheduler when it committed
  (:func:`~fcnseg.host.farm.worker.done_event`), and the image counts as done once;
- a worker that dies (SIGKILL, a board losing power) has its tasks retried on the others, at most
  :data:`~fcnseg.host.farm.client.RETRIES` times; the retry removes the dead worker's temporaries
  and breaks its claim (its owner is provably gone on the same host; a claim of a worker on
  another host is waited out until its heartbeat is two minutes old, below);
- an image that fails (a bad file) fails once with its one-line error: the task returns the
  failure as its result instead of raising, so Dask does not retry it;
- Ctrl-C on the client cancels what has not started and closes a local cluster (its workers
  ignore the terminal's SIGINT: the client alone handles it); the records that came back are in
  the summary, an image being written when its worker stops leaves complete outputs or none
  (the atomic group; a killed writer's hidden temporaries go on the next run), and a re-run
  skips what exists. Images a worker finished after the client stopped listening are on disk
  but ``not-attempted`` in the summary (a re-run skips them).

``fcnseg eval --package P --local-workers N | --scheduler ADDRESS`` scores a dataset the same
way (:mod:`fcnseg.quantize.farm_eval`, beside the datasets it opens): the same connection,
TLS, Ctrl-C flag and result loop (:func:`~fcnseg.host.farm.client.session`,
:func:`~fcnseg.host.farm.client.each_result`), the same open-once plugin
(:class:`~fcnseg.host.farm.worker.OpenOnce`), one task per chunk of images returning its
confusion matrix, summed on the client: exactly a local evaluation's.

A claim a worker on *another* host left (it died there mid-image) cannot be judged by its pid:
its heartbeat stops, and once it is :data:`~fcnseg.host.claims.CLAIM_STALE_SECONDS` old (two
minutes, by the shared folder's clock: :mod:`fcnseg.host.claims`) it is stale. The retry of that
image waits for it (:func:`~fcnseg.host.farm.worker.segment_one` looks again every
:data:`~fcnseg.host.farm.worker.CLAIM_POLL_S`, holding its worker meanwhile), then takes the
image; a claim whose heartbeat goes on belongs to a live run, whose image it is once the wait
(one stale period and two beats) is over. A temporary such a worker left is hidden and removed
by the age rule only (:data:`~fcnseg.atomic.STALE_AGE_SECONDS`).

Not yet: a worker's image is segmented start to end in its task (:meth:`Batch.one`), without
the local pipeline's overlap of decoding, fabric and finishing.

Dask is imported only here, in the cluster code path (the ``cluster`` extra); ``fcnseg.host``
without ``--local-workers``/``--scheduler`` imports neither dask nor distributed.
"""
