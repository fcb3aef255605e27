"""``fcnseg video``: segment video files, image sequences and cameras, frame by frame.

One job per module:

- :mod:`~fcnseg.host.video.library`: the video library's interface and its choice
  (``--video-library auto|av|cv2``), with two implementations:
  :mod:`~fcnseg.host.video.pyav` (PyAV, the ``[video]`` extra) and
  :mod:`~fcnseg.host.video.opencv` (cv2: the PYNQ image's, for the Pynq-Z2). Neither is imported
  before a video is opened, so the host's import path stays numpy + Pillow without them.
- :mod:`~fcnseg.host.video.sources`: what frames come from (:func:`open_source`): a video file
  (every frame, in order), an image sequence (a folder or a glob, sorted naturally) or a camera
  (``camera:0``, ``/dev/video0``: the latest frame only, stale ones dropped and counted).
- :mod:`~fcnseg.host.video.sinks`: where results go: a video of the overlays, one mask PNG per
  frame (the same files as ``fcnseg segment``'s), a JSON of per-frame class areas; all written
  under temporary names and moved into place when the run ends, also on Ctrl-C or a broken input.
- :mod:`~fcnseg.host.video.hud`: the frames/s drawn on the overlay (``--hud``).
- :mod:`~fcnseg.host.video.run`: the run itself, on :class:`fcnseg.host.pipeline.Pipeline`
  (decode, accelerator and finishing overlap; the encoder takes the results in order).
- :mod:`~fcnseg.host.video.cli`: the click command.
"""
