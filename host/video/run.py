"""One ``fcnseg video`` run: frames through :class:`~fcnseg.host.pipeline.Pipeline` into sinks.

The stages overlap as for images (the pipeline's threads and bounded queues)::

    source ─▶ [decode] ─q─▶ [accelerate] ─q─▶ [finish × k] ─▶ in order ─▶ [encode] (this thread)
    frames    --size resize  tiles, engine,    upsample, argmax,           HUD, video, masks,
                             stitch            overlay                      areas

- A file or an image sequence: every frame; the decode stage reads the next frame only when
  the queue after it has room, so memory stays bounded by the queues (``depth`` 2).
- A camera: the latest frame (:class:`~fcnseg.host.video.sources.LatestFrame`) with queues of
  one, so a frame is at most a stage or two old when it reaches the accelerator; frames the
  camera delivered meanwhile are dropped and counted.
- The finish workers compute the overlay (a table lookup per channel); this thread, which
  receives the results in frame order, draws the HUD and feeds the sinks (the encoder must see
  frames in order).

How a run ends (:class:`VideoSummary`): the source's end; a broken file (one line, exit 1,
after every frame decoded before the break is written); a camera that stopped delivering (a
note, exit 0); a frame that fails to segment (one line, exit 1); a sink that cannot write
(a full disk: one line, exit 1); or Ctrl-C (exit 130). In every case the sinks are finalised:
the video is flushed, closed and moved into place, the areas JSON written (``complete`` false
unless the source was read to its end).

Ctrl-C is taken between frames: while this thread writes a frame, SIGINT only asks for the stop
(:class:`StopRequest`), so a frame is never cut half-way through the encoder; while it waits
for the next result, it stops at once.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.video.hud import Rate, draw_hud, hud_text
from fcnseg.host.video.sinks import Finished, Sink
from fcnseg.host.video.sources import Frame, Source, resized


@dataclass
class VideoSummary:
    """What a run did: frames written, dropped (live), seconds, per-stage ms per frame, and
    how it ended (``error``: one line; ``note``: a camera that went away)."""

    frames: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None
    interrupted: bool = False
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def status(self) -> int:
        """Exit status: 130 interrupted, 1 ended by an error, else 0."""
        return 130 if self.interrupted else 1 if self.error else 0

    def line(self) -> str:
        """The closing line: frames, rate, dropped, per-stage ms, outputs."""
        stages = ", ".join(f"{k} {v:.1f} ms" for k, v in self.stage_ms.items())
        wrote = "; wrote " + ", ".join(self.outputs) if self.outputs else ""
        return (
            f"video: {self.frames} frame(s) in {self.wall_s:.1f} s ({self.fps:.1f} frames/s), "
            f"{self.dropped} dropped; per frame: {stages or 'none'}{wrote}"
        )


class StopRequest:
    """SIGINT between frames (module docstring): while :attr:`writing`, a Ctrl-C sets
    :attr:`asked`; otherwise it raises :class:`KeyboardInterrupt` as usual. Installed only in
    the main thread (signal handlers live there), for the duration of a ``with``."""

    def __init__(self) -> None:
        self.asked = False
        self.writing = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.writing:
            self.asked = True
            return
        raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class VideoRun:
    """A source, a segmenter and sinks; :meth:`run` once (module docstring)."""

    segmenter: Any
    source: Source
    sinks: list[Sink]
    overlay: bool = True  #: compute the overlay picture (a video sink wants it)
    alpha: float = 0.5
    clear: tuple[int, ...] = ()  #: classes left uncoloured in the overlay
    size: tuple[int, int] | None = None  #: (width, height) frames are resized to
    hud: bool = False
    workers: int = 2
    max_frames: int | None = None
    progress: bool = True
    _read_s: float = field(default=0.0, init=False, repr=False)

    def _frames(self) -> Iterator[Frame]:
        """The source's frames (up to ``max_frames``), the seconds spent reading them (the video
        library's decoding, in the pipeline's decode thread) summed in :attr:`_read_s`."""
        frames = iter(self.source)
        if self.max_frames:
            frames = itertools.islice(frames, self.max_frames)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            self._read_s += time.perf_counter() - start
            if frame is None:
                return
            yield frame

    def _decode(self, frame: Frame) -> np.ndarray:
        frame.rgb = resized(frame.rgb, self.size)
        return frame.rgb

    def _finish(self, result: Any) -> Finished:
        """In a finish worker: the frame's labels and its overlay."""
        from fcnseg.host.images import overlay

        frame: Frame = result.source
        labels = result.segmentation.labels
        picture = None
        if self.overlay:
            picture = overlay(frame.rgb, labels, self.segmenter.palette, self.alpha, self.clear)
        return Finished(frame.index, frame.time_s, labels, picture)

    def run(self) -> VideoSummary:
        from fcnseg.host.pipeline import Pipeline

        summary = VideoSummary()
        pipe = Pipeline(
            self.segmenter,
            decode=self._decode,
            write=self._finish,
            depth=1 if self.source.live else 2,
            finish_workers=self.workers,
        )
        encode_s, start, complete = 0.0, time.perf_counter(), False
        rate = Rate()
        bar = self._bar()
        with StopRequest() as stop:
            try:
                with contextlib.closing(pipe.run(self._frames())) as results:
                    for result in results:
                        if not result.ok:
                            summary.error = f"frame {result.source.index}: {result.error}"
                            break
                        stop.writing = True
                        t0 = time.perf_counter()
                        self._write(result.output, rate.tick(), summary)
                        encode_s += time.perf_counter() - t0
                        result.source = result.segmentation = result.output = None  # memory
                        stop.writing = False
                        bar.update()
                        if self.source.live:
                            bar.set_postfix(dropped=self.source.dropped, refresh=False)
                        if stop.asked:
                            raise KeyboardInterrupt
                    complete = summary.error is None
            except KeyboardInterrupt:
                summary.interrupted = True
            except UserError as error:  # the source broke: raised after the frames before it
                summary.error = str(error)
            except OSError as error:
                summary.error = f"cannot write ({error.strerror or error}): {error.filename}"
            finally:
                stop.writing = True  # finalising is not cut short by a second Ctrl-C
                bar.close()
                self.source.stop()
                self._close_sinks(summary, complete and not summary.interrupted)
                self.source.close()
        summary.wall_s = time.perf_counter() - start
        summary.dropped = self.source.dropped
        summary.note = getattr(self.source, "ended", None)
        summary.stage_ms = self._stage_ms(pipe, summary.frames, encode_s)
        return summary

    def _write(self, finished: Finished, fps: float, summary: VideoSummary) -> None:
        if self.hud and finished.picture is not None:
            text = hud_text(fps, self.source.dropped, self.source.live)
            finished.picture = draw_hud(finished.picture, text)
        for sink in self.sinks:
            sink.add(finished)
        summary.frames += 1

    def _close_sinks(self, summary: VideoSummary, complete: bool) -> None:
        for sink in self.sinks:
            try:
                sink.close(complete)
            except (OSError, UserError) as error:
                summary.error = summary.error or f"{sink.path}: cannot finalise ({error})"
                continue
            if sink.frames or complete:
                summary.outputs.append(f"{sink.path} ({sink.frames} frames)")

    def _stage_ms(self, pipe: Any, frames: int, encode_s: float) -> dict[str, float]:
        try:
            busy = pipe.report().stage_busy_s
        except UserError:  # the pipeline never ran
            busy = {}
        per = 1e3 / frames if frames else 0.0
        # "read": the source's own decoding; "decode": the pipeline's stage (--size resize)
        stages = {k: busy.get(k, 0.0) * per for k in ("decode", "accelerate", "finish")}
        return {"read": self._read_s * per, **stages, "write": encode_s * per}

    def _bar(self) -> Any:
        from tqdm import tqdm

        total = None if self.source.live else getattr(self.source, "count", None)
        if self.max_frames and total:
            total = min(total, self.max_frames)
        disable = None if self.progress else True
        return tqdm(total=total, unit="frame", desc="video", file=sys.stderr, disable=disable)
