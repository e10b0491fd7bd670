"""Named models: the catalog of variants (imports no model module), the registered
official variants, the two families (config class and builder) and ``create_model``."""
