"""The beamtime job: every scan of a beamtime, from its files to a verdict and a result file.

Plain functions, no Ray (``cdiflow.pipelines.reconstruct`` is the only Ray glue):

- ``sources``: what a source is (34-ID-C beamtime folder, folder of scan files, one
  file) and how a planned scan is read: one dispatcher, one suffix list;
- ``preprocess`` and ``centring``: the measured frame -> the CNN's 64 x 64 pattern and
  the refinement pattern, with their masks;
- ``schema``: the columns of a scan row, declared once; the summary table and the
  result files' names follow from it;
- ``config`` (``ReconstructConfig``), ``rows`` (row and batch helpers, failures);
- ``steps``, ``cnn``, ``refine``, ``verdict``: the per-scan stages;
- ``results`` and ``cxi``: the result files (HDF5, CXI, summary table); ``report``: the
  previews and the HTML report.
"""
