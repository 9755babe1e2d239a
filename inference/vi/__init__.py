"""Variational inference: objectives, per-site gradient estimators and guides (the home the
programmable-VI work fills; it imports ``lowering`` and ``results``, never ``mcmc`` or
``smc``).

    >>> import ppl.inference.vi as vi
    >>> vi.__all__
    []
"""

__all__: list[str] = []
