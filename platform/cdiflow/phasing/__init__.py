"""cdiflow.phasing: iterative phase retrieval (ER, HIO, RAAR + shrink-wrap) on torch.

- ``projections``: the pure update rules and the Fourier magnitude projection;
- ``schedule``: typed schedules (``parse("5*(100*HIO+20*ER)")``, ``PAPER_SCHEDULE``);
- ``shrinkwrap``: the support update;
- ``runner``: the batched engine (``run_phasing``);
- ``starts`` and ``refine``: the four start guesses of the paper and the refinement API;
- ``nns``: nearest-neighbour search over reference patterns.

Importing this package imports nothing heavy beyond torch (submodules load on use).
"""
