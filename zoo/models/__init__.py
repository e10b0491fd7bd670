"""The detectors, in five rooms, lowest first: ``config`` (every size a dataclass field),
``parts/`` (backbone, position encoding, heads, box ops), ``pipeline/`` (images, resize rule,
pre/post-processing, ``Detector.predict``), ``detr/`` and ``deformable/`` (the two families),
``registry/`` (named variants, families, ``create_model``).

Importing the package registers the variants (:mod:`zoo.models.registry.variants`) with the
catalog (:mod:`zoo.models.registry.catalog`), which itself imports no model module.
"""

from zoo.models.registry import variants as _variants  # noqa: F401  (registers the named variants)
