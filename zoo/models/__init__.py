"""The detectors: configurations, the named variants, the model families and their parts.

Importing the package registers the variants (:mod:`zoo.models.variants`) with the
registry (:mod:`zoo.models.registry`), which itself imports no model module.
"""

from zoo.models import variants as _variants  # noqa: F401  (registers the named variants)
