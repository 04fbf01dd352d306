"""One module per ``cdiflow`` verb: ``add_parser(subparsers)`` and ``run(args) -> int``.

Each ``add_parser`` sets ``parser.set_defaults(run=run)``. Heavy imports stay inside
``run`` so ``cdiflow --help`` is fast.
"""
