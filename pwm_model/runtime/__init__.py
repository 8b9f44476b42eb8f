"""Torch-free inference: what the vehicle runs (numpy, OpenCV, ONNX Runtime or TensorRT).

- ``types.py``: ``EgoInput``, ``Plan`` and the ``Engine`` protocol (the contract with the ROS node and the evaluator)
- ``runner.py``: ``PolicyRunner`` (camera frame -> Plan; previews), the one inference path
- ``history.py`` / ``surprise.py`` / ``rollout.py``: the token ring buffer, the forecast surprise, the stepwise loop
- ``manifest.py``: the model directory's manifest.json, checked against its graphs
- ``backends.py`` (onnxruntime; torch by name), ``trt_engine.py`` (TensorRT 10), ``engine_key.py`` (engine cache keys)
- ``onnx_check.py`` + ``trt_onnx_ops.json``: the TensorRT ONNX-parser compatibility check
- the resize and the ego vector come from the torch-free contract ``pwm_model/data/contract.py``
- the PyTorch modules behind the graphs (``pwm_model/export/graphs.py``) and the torch reference backend
  (``pwm_model/export/torch_backend.py``, opened by module name) live in the export wing: nothing here imports torch
"""
