"""Image-level labels from the synthetic scenes: which shape class covers most of the scene.

The classifier's task (``fcnseg.quantize.models.classifier``). The label of an image is derived
from the per-pixel label of exactly that image (:func:`dominant_class`): among the six shape
classes (``synthetic.CLASSES[1:]``: disc, square, triangle, star, ring, bar) the one with the
most visible pixels; ties go to the lower index. Shapes are painted with photo textures, so the
class is the outline, as for segmentation. A scene in which no shape is visible (every object
fell outside the frame) has no dominant shape: its label is :data:`NO_LABEL`, and training and
accuracy leave it out rather than invent one.

Splits are the synthetic scenes' disjoint seed ranges (``train``, ``val``, and ``test``, the
held-out split of every reported figure). numpy + Pillow only.
"""

from __future__ import annotations

import numpy as np

from fcnseg.quantize.data.synthetic import CLASSES, SyntheticScenes, render_scene

#: the classifier's classes: the shape classes of the synthetic scenes (background excluded).
SHAPE_CLASSES: tuple[str, ...] = CLASSES[1:]
#: the label of a scene without any visible shape.
NO_LABEL = -1


def dominant_class(label: np.ndarray) -> int:
    """Index into :data:`SHAPE_CLASSES` of the shape with the most pixels in ``label``
    (a per-pixel label of :data:`~fcnseg.quantize.data.synthetic.CLASSES`), or :data:`NO_LABEL`."""
    counts = np.bincount(np.asarray(label).reshape(-1), minlength=len(CLASSES))[1 : len(CLASSES)]
    if counts.max() == 0:
        return NO_LABEL
    return int(np.argmax(counts))  # first maximum: ties go to the lower index


class DominantShapes:
    """Synthetic scenes of one split as ``(image (H, W, 3) uint8, class index)`` pairs, cached.

    Item ``i`` is ``render_scene(seed, (side, side), object_scale, objects)`` for the seed of
    scene ``i`` of :class:`SyntheticScenes` ``(split, ..., length)``, with its
    :func:`dominant_class`. The defaults (``objects=(1, 1)``, ``object_scale=1.5``) make scenes of
    one or two large shapes: in the segmentation scenes' clutter of 3 to 7 shapes which one
    covers most is decided by small area differences, and a net small enough for the Pynq-Z2
    trained for minutes on a CPU stayed at the majority class there (33% on ``val``). Scenes are
    rendered once and kept (a 224x224 scene is 150 KB).
    """

    classes: tuple[str, ...] = SHAPE_CLASSES

    def __init__(
        self,
        split: str,
        side: int = 224,
        length: int | None = None,
        objects: tuple[int, int] = (1, 1),
        object_scale: float = 1.5,
    ) -> None:
        self.scenes = SyntheticScenes(split, (side, side), length, object_scale)
        self.objects = (int(objects[0]), int(objects[1]))
        self._cache: dict[int, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        index = int(index) % len(self)
        if index not in self._cache:
            scenes = self.scenes
            image, label = render_scene(
                scenes.seed(index), scenes.size, scenes.object_scale, self.objects
            )
            self._cache[index] = (image, dominant_class(label))
        return self._cache[index]

    def labels(self) -> np.ndarray:
        """Every item's class index (int64), rendering the scenes not seen yet."""
        return np.array([self[i][1] for i in range(len(self))], dtype=np.int64)
