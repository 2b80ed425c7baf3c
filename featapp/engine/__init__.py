"""The model and what it takes in: loading ONNX files and their metadata, providers,
image preparation, probes, geometry (receptive fields), the first layer's filters,
training snapshots and activation files."""
