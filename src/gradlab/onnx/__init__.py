"""``gl.onnx``: export a trained model to an ONNX file for deployment.

Importing this package never needs the ``onnx`` package; ``export`` imports it when called
and says how to install it when it is missing."""
from .export import OPSET, export
from .ops import ExportError, supported_ops

__all__ = ["OPSET", "ExportError", "export", "supported_ops"]
