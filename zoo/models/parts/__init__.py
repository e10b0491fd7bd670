"""Parts both families share: the ResNet backbone, sine position encodings, the MLP heads
and box arithmetic. They import only :mod:`zoo.models.config`."""
