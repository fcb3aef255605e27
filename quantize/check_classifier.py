"""Check a classification package against the checkpoint it was made from: the seed's claim.

``python -m fcnseg.quantize.check_classifier PACKAGE CHECKPOINT IMAGE...`` (the last step of
``make rebuild-classifier``): each image resized to the package's tile (Pillow bilinear), plus
two 0/255 boundary inputs (a 1-px checkerboard, 40-px blocks whose edges miss the 32-px grid), run
once through :class:`fcnseg.host.classify.Classifier` on the simulator (the deployed path), must
give a score map whose cell ``(i, j)`` equals the checkpoint's unconverted classifier
(Brevitas, float64) on the ``window x window`` crop at ``(s i, s j)``, as integers, for every
cell. Also: the package's model card must name the checkpoint by sha256 (a stale package is
refused before any pixel is compared), and its classes must be the checkpoint's.

Why not ``fcnseg verify``: that runs the generated C++/RTL against the simulator (minutes,
compilers); this checks what a shipped classifier promises — one pass is the crops — against
the weights it was trained with, in seconds. A failure is one line naming the package, image and
cell, exit 1, so the make target fails.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.errors import UserError

#: how far (in integer steps) a float64 score may sit from the grid before it is not an integer
GRID_TOLERANCE = 1e-3


def boundary_inputs(height: int, width: int) -> dict[str, np.ndarray]:
    """Two 0/255 inputs of ``height x width`` (uint8 RGB): a 1-px checkerboard and 40-px
    blocks (edges off the 32-px grid, so pooling windows straddle them)."""
    yy, xx = np.mgrid[:height, :width]
    fields = {
        "checkerboard-1px": (yy + xx) % 2 == 0,
        "blocks-40px": (yy // 40 + xx // 40) % 2 == 0,
    }
    return {
        k: np.repeat((f * 255).astype(np.uint8)[..., None], 3, axis=2) for k, f in fields.items()
    }


def crop_scores(model: Any, image: np.ndarray, window: int, stride: int) -> np.ndarray:
    """``(ny, nx, C)`` int64: the classifier (float64 copy, eval) on every ``window`` crop of
    ``image`` at ``stride``, turned into the score layer's integers (refused off the grid)."""
    import torch

    from fcnseg.quantize.exact.extract import float64_copy

    net = float64_copy(model).eval()
    scale, bias = model.output_scale_bias()
    ny = (image.shape[0] - window) // stride + 1
    nx = (image.shape[1] - window) // stride + 1
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).double()[None]
    crops = [
        x[:, :, stride * i : stride * i + window, stride * j : stride * j + window]
        for i in range(ny)
        for j in range(nx)
    ]
    with torch.no_grad():
        logits = torch.cat([net(c) for c in crops]).numpy()
    q = (logits - bias) / scale
    ints = np.rint(q)
    off = float(np.abs(q - ints).max())
    if off > GRID_TOLERANCE:
        raise UserError(f"the classifier's scores are {off:.3g} off the integer grid")
    return ints.astype(np.int64).reshape(ny, nx, -1)


def check_package(
    package: str | Path, checkpoint: str | Path, images: Sequence[str | Path]
) -> list[str]:
    """Run the check (module docstring); one summary line per input, or :class:`UserError`."""
    import torch

    from fcnseg.host.classify import Classifier, resize
    from fcnseg.host.images import load_image
    from fcnseg.host.package import sha256_file
    from fcnseg.quantize.models.classifier import load_classifier

    torch.set_num_threads(1)
    clf = Classifier.load(package, "sim")
    assert clf.package is not None
    card = clf.package.card
    if card.source_sha256 != sha256_file(checkpoint):
        raise UserError(
            f"package {package}: its model card names checkpoint sha256 "
            f"{str(card.source_sha256)[:12]}..., not {checkpoint} (rebuild the package)"
        )
    model, meta = load_classifier(checkpoint)
    if list(meta.get("classes", [])) != list(clf.classes):
        raise UserError(f"package {package}: classes {list(clf.classes)} are not {checkpoint}'s")
    geo = clf.geometry
    inputs = {str(p): resize(load_image(p), geo.tile) for p in images}
    inputs.update(boundary_inputs(*geo.tile))
    lines = []
    for name, rgb in inputs.items():
        have = np.asarray(clf.score_map(rgb), dtype=np.int64)
        want = crop_scores(model, rgb, geo.window, geo.stride)
        if have.shape != want.shape:
            raise UserError(f"package {package} on {name}: map {have.shape}, crops {want.shape}")
        bad = np.argwhere((have != want).any(axis=-1))
        cells = have.shape[0] * have.shape[1]
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise UserError(
                f"package {package} on {name}: cell ({i}, {j}) {have[i, j].tolist()} is not the "
                f"checkpoint on the crop at ({geo.stride * i}, {geo.stride * j}) "
                f"{want[i, j].tolist()} ({len(bad)} of {cells} cells differ)"
            )
        lines.append(f"{name}: {have.shape[0]}x{have.shape[1]} cells == the crops")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``PACKAGE CHECKPOINT IMAGE...``: print one line per input; 0 if all equal, else 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m fcnseg.quantize.check_classifier PACKAGE CHECKPOINT IMAGE...",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        lines = check_package(args[0], args[1], args[2:])
    except UserError as error:
        print(f"check_classifier: {error}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    print(f"check_classifier: {args[0]} is {args[1]} on every crop of {len(lines)} inputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
