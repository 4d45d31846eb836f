"""Data (the ``data`` config group): the loaders built from timm's parts (:mod:`.loaders`) and the
built-in tasks generated on the machine (:mod:`.builtin`)."""
