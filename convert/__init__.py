"""The one-time pipeline: train the lecture's model and export Keras models to ONNX.

This package imports TensorFlow; the app (``featapp``) never does.
"""
