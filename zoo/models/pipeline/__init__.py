"""From a user's image to detections and back: image reading, the resize rule,
normalising and padding, post-processing, and the ``Detector`` base with ``predict``."""
