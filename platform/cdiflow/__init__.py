"""cdiflow: machine-learning phase retrieval for coherent X-ray diffraction imaging.

Importing this package does no work: no folders are created, no tracking URI is set,
no Ray is started. Heavy dependencies (ray, mlflow, matplotlib) are imported lazily
inside ``cdiflow.pipelines`` and ``cdiflow.reports``.
"""

__version__ = "0.1.0"

# Geometry shared by every part (see physics.fft): the object box is N x N inside a
# P x P pattern, oversampling 2 per axis.
OBJECT_SIZE = 32
PATTERN_SIZE = 64
