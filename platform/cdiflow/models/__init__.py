"""cdiflow.models: the paper's encoder-decoder CNN, its config, FLOPs and weight files.

Pure PyTorch; no Ray, no MLflow.
"""

from cdiflow.models.cnn import (
    PhaseRetrievalCNN,
    build_model,
    fold_batchnorm,
    inference_batch,
    inference_model,
    training_layout,
)
from cdiflow.models.config import ModelConfig
from cdiflow.models.flops import count_flops, count_parameters
from cdiflow.models.weights import WeightsError, load_weights, save_weights

__all__ = [
    "ModelConfig",
    "PhaseRetrievalCNN",
    "WeightsError",
    "build_model",
    "count_flops",
    "count_parameters",
    "fold_batchnorm",
    "inference_batch",
    "inference_model",
    "load_weights",
    "save_weights",
    "training_layout",
]
