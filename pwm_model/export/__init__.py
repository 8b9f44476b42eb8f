"""Export: the graphs' PyTorch modules, ONNX export, engine builds, calibration and the torch reference backend."""
