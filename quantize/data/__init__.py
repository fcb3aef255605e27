"""Datasets for training and evaluation, as numpy ``(image, label)`` pairs (numpy + Pillow only).

- :mod:`.synthetic`: textured shapes on textured backgrounds, deterministic per seed, any size.
- :mod:`.voc`, :mod:`.cityscapes`: readers for the datasets' own folder layouts.
- :mod:`.augment`: random scale, crop to tile, flip, with a seeded numpy generator.
- :mod:`.palette`: VOC and Cityscapes colours, ``IGNORE_INDEX`` (255).
- :mod:`.spec`: ``open_dataset("synthetic" | "voc:PATH" | "cityscapes:PATH", split)``.
"""
