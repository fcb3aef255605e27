"""One ``fcnseg segment`` batch: route each image to the pipeline or the strip path, write its
outputs, keep its record.

For a job of stem ``S`` (:mod:`fcnseg.host.inputs`) in ``OUT``:

- ``OUT/S.png``: the mask, a palette PNG whose pixel value is the class index, its palette the
  class colours and its ``iTXt`` chunk ``fcnseg:classes`` the class names;
- ``OUT/S_overlay.jpg`` (``overlay``): the colours blended over the image, with ``legend`` a
  strip naming the classes below it; ``OUT/S_overlay.png`` with ``overlay_format="png"``
  (lossless, ~80x the encoding time of JPEG: :mod:`fcnseg.host.images.overlays`);
- ``OUT/S_scores.npz`` (``scores``): the integer scores cropped to the image with their scale,
  bias, classes, stride and footprint (:mod:`fcnseg.host.images.scores`);
- ``classes.json`` in every folder that receives masks (:mod:`fcnseg.host.images.classes`).

Images above :data:`STREAM_PIXELS` (and any binary PPM/PGM) are segmented in strips
(:meth:`~fcnseg.host.segmenter.Segmenter.stream`: mask and scores written row by row, memory
bounded by a row of tiles) unless the overlay or shift-and-stitch needs the whole image; the
others go through :class:`~fcnseg.host.pipeline.Pipeline`.

What a batch promises about its output folder (issue 16):

- **Checked up front**: before any image is read, ``OUT`` must be (or be made) a writable folder
  on a writable file system with room for the largest input's outputs
  (:func:`~fcnseg.host.output_folder.check_output_folder`); else one line, exit 2.
- **An image's outputs appear together**: mask, overlay and scores are all written to hidden
  temporaries first, then renamed into place, the mask last (:func:`fcnseg.atomic.atomic_group`),
  also in strips. An existing mask means a finished image with all its outputs; a failure leaves
  none of them.
- **A full disk stops the batch**: a write that fails with "disk full" (or quota, or a file
  system turned read-only) is one line naming the image; the images after it are not attempted
  (``not-attempted: disk full`` in the summary), exit 1; a re-run does the rest.
- **Concurrent runs share the work**: an image is claimed (:mod:`fcnseg.host.claims`) before it
  is decoded, after checking that its mask is not there yet, and checked again once claimed; an
  image claimed by another live run is left to it and looked at again at the end of the batch
  (``another-run`` in the summary). With ``--overwrite``, a mask written since this run started
  counts as another run's.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcnseg.atomic import atomic_group
from fcnseg.errors import UserError, for_flags
from fcnseg.host.claims import Claim, Held, remove_stale_claim, try_claim
from fcnseg.host.inputs import Job
from fcnseg.host.output_folder import (
    check_output_folder,
    disk_trouble,
    estimate_bytes,
    largest_sizes,
)
from fcnseg.host.summary import BatchSummary, ImageRecord

if TYPE_CHECKING:
    from fcnseg.host.segmenter import Segmentation

#: Images above this many pixels are segmented in strips (:meth:`Segmenter.stream`), with
#: memory bounded by a row of tiles instead of the image (when the options allow).
STREAM_PIXELS = 4096 * 4096
#: ``overlay_format`` -> the overlay's file suffix (the suffix chooses the encoder).
OVERLAY_SUFFIXES = {"jpeg": ".jpg", "png": ".png"}


class BatchStopped(Exception):
    """Writing failed in a way no later image can avoid (disk full, quota, read-only): the
    batch stops. ``reason`` is :func:`~fcnseg.host.output_folder.disk_trouble`'s word for it."""

    def __init__(self, job: Job, record: ImageRecord, reason: str, error: BaseException) -> None:
        detail = getattr(error, "strerror", None) or error
        super().__init__(f"{job.source}: {reason} ({detail})")
        self.job, self.record, self.reason = job, record, reason


@dataclass(frozen=True)
class Outputs:
    """The output files of one job (the mask first; the others only when asked for)."""

    mask: Path
    overlay: Path | None
    scores: Path | None

    @classmethod
    def of(
        cls, out_dir: Path, job: Job, overlay: bool, scores: bool, overlay_format: str = "jpeg"
    ) -> Outputs:
        folder, name = out_dir / job.stem.parent, job.stem.name
        suffix = OVERLAY_SUFFIXES[overlay_format]
        return cls(
            folder / f"{name}.png",
            folder / f"{name}_overlay{suffix}" if overlay else None,
            folder / f"{name}_scores.npz" if scores else None,
        )

    def files(self) -> list[Path]:
        return [p for p in (self.mask, self.overlay, self.scores) if p is not None]

    def to_json(self) -> dict[str, str]:
        named = {"mask": self.mask, "overlay": self.overlay, "scores": self.scores}
        return {k: str(v) for k, v in named.items() if v is not None}


@dataclass
class Batch:
    """A batch of jobs with one segmenter and one set of output options."""

    seg: Any
    out_dir: Path
    overlay: bool = False
    legend: bool = False
    alpha: float = 0.5
    overlay_format: str = "jpeg"  #: a key of :data:`OVERLAY_SUFFIXES`
    jpeg_quality: int = 90  #: of JPEG overlays, 1-95
    scores: bool = False
    max_pixels: int = 0
    debug: bool = False
    flags: dict[str, str] = field(default_factory=dict)  #: parameter -> option, for messages
    summary: BatchSummary = field(default_factory=BatchSummary)
    warned: set[tuple[int, int]] = field(default_factory=set)
    bar: Any = None

    def __post_init__(self) -> None:
        from fcnseg.host.images import ClassTable

        if self.overlay_format not in OVERLAY_SUFFIXES:
            choices = " or ".join(OVERLAY_SUFFIXES)
            raise UserError(f"overlay format must be {choices}, got {self.overlay_format!r}")
        if not 1 <= self.jpeg_quality <= 95:
            raise UserError(f"JPEG quality must be 1-95, got {self.jpeg_quality}")
        n = len(self.seg.output_scale)
        try:
            self.table = ClassTable.of(n, self.seg.classes, self.seg.palette)
        except ValueError as error:
            raise UserError(f"the package's class table is unusable: {error}") from None
        self.summary.classes = self.table.names
        # A "background" class (VOC's, the synthetic scenes') is left clear in overlays.
        self.clear = tuple(i for i, name in enumerate(self.table.names) if name == "background")
        self.overwrite = False
        self.started = time.time()  #: wall clock at the start of :meth:`all` (masks' mtimes)
        self.held = Held()  #: id(job) -> the claim this run holds on it

    # --- reporting ---------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """One line on stderr, above the progress bar."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def outputs(self, job: Job) -> Outputs:
        return Outputs.of(self.out_dir, job, self.overlay, self.scores, self.overlay_format)

    def check_distinct(self, jobs: list[Job]) -> None:
        """Refuse a batch in which two outputs are one file: with PNG overlays, the mask of
        ``a_overlay.jpg`` is the overlay of ``a.jpg`` (``a_overlay.png``)."""
        owner: dict[Path, Job] = {}
        for job in jobs:
            for path in self.outputs(job).files():
                other = owner.setdefault(path, job)
                if other is not job:
                    raise UserError(
                        f"{path} would be written for both {other.source} and {job.source}: "
                        "rename one, or use --overlay-format jpeg"
                    )

    def note_plan(self, height: int, width: int) -> None:
        plan = self.seg.plan(height, width)
        if not plan.exact and plan.canvas not in self.warned:
            self.warned.add(plan.canvas)
            self.say(
                f"fcnseg: note: overlap {plan.overlap} px leaves {plan.guard} px of context, "
                f"the receptive field needs {self.seg.geometry.margin}: tiles are not exact"
            )

    def image_failed(self, job: Job, record: ImageRecord, error: BaseException) -> None:
        """An image whose decode, segmentation or writing raised: a full (or read-only) disk
        stops the batch (:class:`BatchStopped`), anything else fails this image alone."""
        record.histogram = None
        if (reason := disk_trouble(error)) is not None:
            raise BatchStopped(job, record, reason, error) from error
        self.fail(job, record, error)

    def fail(self, job: Job, record: ImageRecord, error: BaseException) -> None:
        """Record and print one failed image as one line (a bug re-raised under --debug)."""
        if isinstance(error, UserError):
            line = for_flags(error, self.flags)
            line = line if str(job.source) in line else f"{job.source}: {line}"
        else:
            if self.debug:
                raise error
            line = f"{job.source}: {type(error).__name__}: {error} (--debug: traceback)"
        record.status, record.message = "failed", line
        self.say(f"fcnseg: {line}")

    # --- the output folder, claims --------------------------------------------------------------

    def check_output(self, jobs: list[Job]) -> None:
        """The up-front check of the output folder (module docstring), sized for the largest
        input's outputs."""
        need = estimate_bytes(
            largest_sizes(job.source for job in jobs),
            overlay=self.overlay_format if self.overlay else None,
            scores=self.scores,
            stride=max(1, self.seg.geometry.output_stride // self.seg.shifts.factor),
            classes=len(self.table.names),
        )
        check_output_folder(self.out_dir, need)

    def finished_elsewhere(self, mask: Path) -> bool:
        """Has another run finished this mask since this one started? (It exists: without
        ``--overwrite`` it was not there at the start; with it, it was written since.)"""
        try:
            modified = mask.stat().st_mtime
        except OSError:
            return False
        return not self.overwrite or modified >= self.started

    def take(self, job: Job, record: ImageRecord, *, last: bool) -> bool:
        """Claim ``job`` for this run: True if this run is to segment it now. False if another
        run did it, or holds it (then, on the ``last`` look, it is recorded as that run's).
        A write error while claiming that stops the batch raises :class:`BatchStopped`."""
        mask = self.outputs(job).mask
        if self.finished_elsewhere(mask):
            self.by_another(record, "done by another run")
            return False
        try:
            claim = try_claim(mask)
        except OSError as error:
            if (reason := disk_trouble(error)) is not None:
                raise BatchStopped(job, record, reason, error) from error
            self.fail(job, record, UserError(f"cannot claim {mask} ({error.strerror or error})"))
            self.bar.update()
            return False
        if not isinstance(claim, Claim):
            if last:
                self.by_another(record, f"being segmented by another run ({claim.describe()})")
            return False
        if self.finished_elsewhere(mask):  # the other run finished it just before we claimed
            claim.release()
            self.by_another(record, "done by another run")
            return False
        self.held.add(id(job), claim)
        return True

    def by_another(self, record: ImageRecord, message: str) -> None:
        record.status, record.message = "another-run", message
        self.bar.update()

    def release(self, job: Job) -> None:
        """Give up the claim on ``job`` (after its mask is committed, or it failed)."""
        self.held.release(id(job))

    def claimed(self, jobs: list[tuple[Job, ImageRecord]]) -> Iterator[tuple[Job, ImageRecord]]:
        """The jobs this run claims, in order; those another run holds are looked at again
        after the others (it may have finished, or given up, by then)."""
        later = []
        for job, record in jobs:
            if self.take(job, record, last=False):
                yield job, record
            elif record.status == "not-attempted" and record.message is None:
                later.append((job, record))
        for job, record in later:
            if self.take(job, record, last=True):
                yield job, record

    # --- routing -----------------------------------------------------------------------------

    def streamed(self, job: Job) -> bool:
        """Segment ``job`` in strips? (large, and no option needs the whole image)."""
        from fcnseg.host.images import image_size, is_netpbm

        if self.overlay or self.seg.shifts.factor != 1:
            return False
        if is_netpbm(job.source):
            return True
        size = image_size(job.source)
        return size is not None and size[0] * size[1] > STREAM_PIXELS

    def write_classes(self, jobs: list[Job]) -> None:
        """``classes.json`` in each folder that receives masks, before any mask is written."""
        from fcnseg.host.images import write_classes_json

        package = getattr(self.seg.package, "path", None)
        for folder in sorted({self.outputs(job).mask.parent for job in jobs}):
            try:
                write_classes_json(folder, self.table, package=str(package) if package else None)
            except OSError as error:  # the output folder cannot be written: nothing could be
                reason = error.strerror or error
                raise UserError(f"{folder}: cannot write classes.json ({reason})") from None

    def prepare(self, jobs: list[Job], *, overwrite: bool) -> list[tuple[Job, ImageRecord]]:
        """Start a batch of ``jobs``: check the output folder, write ``classes.json``, give
        every job its record and skip finished ones (unless ``overwrite``); the jobs left to
        do, with their records. Shared by :meth:`all` and the farm's client
        (:mod:`fcnseg.host.farm`)."""
        from tqdm import tqdm

        from fcnseg.host.images import remove_stale_temps

        self.overwrite, self.started = overwrite, time.time()
        self.check_distinct(jobs)
        if jobs:  # nothing to write, nothing to check (and no folder made)
            self.check_output(jobs)
        self.write_classes(jobs)
        self.bar = tqdm(total=len(jobs), unit="img", desc="segment", file=sys.stderr, disable=None)
        todo: list[tuple[Job, ImageRecord]] = []
        for job in jobs:
            outputs = self.outputs(job)
            record = self.summary.add(ImageRecord(str(job.source), outputs=outputs.to_json()))
            record.frames = job.frames_record()
            if job.note is not None:  # frame 0 of a multi-frame file (--frames first)
                self.say(f"fcnseg: note: {job.note}")
            if job.renamed_for is not None:
                self.say(
                    f"fcnseg: note: {job.source}: outputs named {job.stem.name}.* "
                    f"({job.renamed_for} has the same stem)"
                )
            if outputs.mask.exists() and not overwrite:
                record.status = "skipped"
                record.message = f"{outputs.mask} exists, skipped (use --overwrite)"
                self.say(f"fcnseg: {job.source}: {record.message}")
                remove_stale_claim(outputs.mask)  # a run killed after its last commit
                self.bar.update()
                continue
            for path in outputs.files():  # a killed run's leftovers (never a live run's)
                remove_stale_temps(path)
            todo.append((job, record))
        return todo

    def stopped(self, record: ImageRecord, reason: str, line: str) -> None:
        """Record a batch stopped at ``record`` for ``reason`` (a full disk; ``line`` says
        where): the images not reached are ``not-attempted`` with the reason, and one line
        says how to do the rest."""
        record.status, record.message = "failed", line
        self.summary.stopped = reason
        self.summary.not_attempted(reason)
        left = len(self.summary.of_status("not-attempted"))
        fix = "make it writable" if reason == "read-only file system" else "make room"
        self.say(
            f"fcnseg: {line}: batch stopped, {left} image(s) not attempted; {fix} and run "
            "the same command again to do the rest"
        )

    def all(self, jobs: list[Job], *, overwrite: bool, workers: int) -> None:
        """Run ``jobs``: check the output folder, skip finished ones (unless ``overwrite``),
        pipeline or stream the rest; a full disk stops the batch (module docstring). Refusals
        before any image (:class:`~fcnseg.errors.UserError`) propagate."""
        start = time.perf_counter()
        todo: list[tuple[Job, ImageRecord]] = []
        big: list[tuple[Job, ImageRecord]] = []
        try:
            for job, record in self.prepare(jobs, overwrite=overwrite):
                (big if self.streamed(job) else todo).append((job, record))
            self.pipelined(todo, workers)
            for job, record in self.claimed(big):
                self.strips(job, record)
                self.bar.update()
        except BatchStopped as stop:
            self.stopped(stop.record, stop.reason, str(stop))
        finally:
            self.held.release_all()
            self.summary.seconds = time.perf_counter() - start

    # --- whole images, pipelined -------------------------------------------------------------

    def pipelined(self, jobs: list[tuple[Job, ImageRecord]], workers: int) -> None:
        """Decode, accelerate and finish + write, overlapped (:mod:`fcnseg.host.pipeline`)."""
        from fcnseg.host.pipeline import Pipeline

        images: dict[int, Any] = {}  # decoded images kept for the overlay until it is written
        records = {id(job): record for job, record in jobs}
        sources = (job for job, _ in self.claimed(jobs))

        def decode(job: Job) -> Any:
            image = job.load(self.max_pixels)  # its frame, for a frame of a multi-frame file
            self.note_plan(*image.shape[:2])
            if self.overlay:
                images[id(job)] = image
            return image

        def write(result: Any) -> None:
            job = result.source
            image = images.pop(id(job), None)
            self.write(job, records[id(job)], result.segmentation, image)

        pipe = Pipeline(self.seg, decode=decode, write=write, finish_workers=workers)
        with contextlib.closing(pipe.run(sources)) as results:  # closing: the workers stop
            for result in results:
                job = result.source
                images.pop(id(job), None)
                self.release(job)
                record = records[id(job)]
                record.seconds = sum(
                    result.times.get(s, 0.0) for s in ("decode", "accelerate", "finish")
                )
                if result.ok:
                    record.status = "done"
                else:
                    self.image_failed(job, record, result.exception or UserError(result.error))
                self.bar.update()

    def write(self, job: Job, record: ImageRecord, seg: Segmentation, image: Any) -> None:
        """Write one image's outputs (in a finish worker, or a farm worker's task), together
        and the mask last (:func:`~fcnseg.atomic.atomic_group`), so its presence means the
        image is done."""
        from fcnseg.host.images import save_mask, save_overlay, save_scores

        outputs = self.outputs(job)
        record.size = tuple(seg.labels.shape)
        with atomic_group(outputs.mask) as group:
            if outputs.scores is not None:
                fields = self.score_fields(seg)
                save_scores(group.path(outputs.scores), seg.scores.astype(np.int32), **fields)
            if outputs.overlay is not None:
                legend = self.table if self.legend else None
                save_overlay(
                    group.path(outputs.overlay),
                    image,
                    seg.labels,
                    self.seg.palette,
                    self.alpha,
                    self.clear,
                    legend,
                    quality=self.jpeg_quality,
                )
            save_mask(group.path(outputs.mask), seg.labels, self.seg.palette, self.table)
        record.count(seg.labels, len(self.table.names))
        record.status = "done"  # now: a batch stopped before this result is read knows it
        self.release(job)

    def score_fields(self, seg: Any) -> dict[str, Any]:
        """What ``NAME_scores.npz`` says about its scores, but the image size."""
        return {
            "image_size": tuple(seg.labels.shape),
            "stride": seg.stride,
            "field": seg.field,
            "scale": self.seg.output_scale,
            "bias": self.seg.output_bias,
            "classes": self.table.names,
        }

    # --- one image, start to end (a farm worker's task) ------------------------------------------

    def one(self, job: Job, record: ImageRecord) -> None:
        """Segment and write one job in this thread: the temporaries of killed writers
        removed, claimed, decoded, segmented (in strips when :meth:`streamed`), written by
        :meth:`write` (or :meth:`strips`), released; a failure recorded as its one line. The
        same claim, write and failure rules as :meth:`all`, without its pipeline (a farm
        worker, :mod:`fcnseg.host.farm`, does one image per task). A write that stops the
        batch (a full disk) raises :class:`BatchStopped`."""
        from fcnseg.host.images import remove_stale_temps

        for path in self.outputs(job).files():  # a killed writer's leftovers (never a live one's)
            remove_stale_temps(path)
        if not self.take(job, record, last=True):
            return
        if self.streamed(job):
            self.strips(job, record)
            return
        start = time.perf_counter()
        try:
            image = job.load(self.max_pixels)
            self.note_plan(*image.shape[:2])
            self.write(job, record, self.seg.segment(image), image if self.overlay else None)
        except Exception as error:
            self.image_failed(job, record, error)
        finally:
            self.release(job)
            record.seconds = time.perf_counter() - start

    # --- large images, in strips -------------------------------------------------------------

    def strips(self, job: Job, record: ImageRecord) -> None:
        """Segment one large image band by band, writing the mask (and scores) as it goes."""
        start = time.perf_counter()
        try:
            rows = job.rows(self.max_pixels)  # open_rows, or the job's frame decoded whole
        except Exception as error:
            self.release(job)
            self.fail(job, record, error)
            return
        try:
            record.size = (rows.height, rows.width)
            self.note_plan(rows.height, rows.width)
            outputs = self.outputs(job)
            with atomic_group(outputs.mask) as group:
                staged = Outputs(
                    group.path(outputs.mask),
                    None,
                    group.path(outputs.scores) if outputs.scores is not None else None,
                )
                self.stream(rows, staged, record)
            record.status = "done"
        except Exception as error:
            self.image_failed(job, record, error)
        finally:
            self.release(job)
            rows.close()
            record.seconds = time.perf_counter() - start

    def stream(self, rows: Any, outputs: Outputs, record: ImageRecord) -> None:
        """Run :meth:`Segmenter.stream` over ``rows`` into the row writers of ``outputs``."""
        from fcnseg.host.images import png_mask_writer, scores_writer

        height, width = rows.height, rows.width
        hc, wc = self.seg.plan(height, width).canvas
        s, n = self.seg.geometry.output_stride, len(self.table.names)
        with contextlib.ExitStack() as stack:  # exits in reverse: the mask is renamed last
            mask = stack.enter_context(
                png_mask_writer(outputs.mask, height, width, self.seg.palette, self.table)
            )
            on_scores = None
            if outputs.scores is not None:
                fields = {"image_size": (height, width), "stride": s, "field": s}
                fields.update(
                    scale=self.seg.output_scale,
                    bias=self.seg.output_bias,
                    classes=self.table.names,
                )
                writer = scores_writer(outputs.scores, canvas_cells=(hc // s, wc // s, n), **fields)
                on_scores = stack.enter_context(writer)

            def on_labels(_y: int, labels: np.ndarray) -> None:
                mask(labels)
                record.count(labels, n)

            self.seg.stream(rows, on_labels, on_scores)
