"""Deployment: trained checkpoints for inference, the deployed (folded, int8) network, ONNX export
and the ONNX Runtime side (sessions, metadata)."""

from dsmn.deploy.metadata import InputRecipe, read_recipe
from dsmn.deploy.onnx_export import ExportCheckError, ExportReport, export_onnx
from dsmn.deploy.runtime import OnnxClassifier, create_session, optimized_operators
from dsmn.deploy.torch_model import deployed_module
from dsmn.deploy.trained import TrainedModel, load_trained
from dsmn.features import network_input  # re-exported: the deployed input is the trained one

__all__ = [
    "ExportCheckError",
    "ExportReport",
    "InputRecipe",
    "OnnxClassifier",
    "TrainedModel",
    "create_session",
    "deployed_module",
    "export_onnx",
    "load_trained",
    "network_input",
    "optimized_operators",
    "read_recipe",
]
