"""From a trained checkpoint to what the vehicle runs: ``export_onnx.py`` (ONNX graphs + manifest.json),
``build_engine.py`` (TensorRT engines or ONNX Runtime optimized graphs) and ``calibration.py`` (INT8 calibration)."""
