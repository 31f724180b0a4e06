"""Classify images with a model that tumor-search exported (ONNX), without TensorFlow."""
