"""Stages 2 and 3: the block-causal world-model transformer, its KV-cache rollout and the dynamic focal loss.

``PolicyWorldModel`` (model.py) forecasts dyn frames by parallel next-frame generation and plans K waypoints;
mask.py holds the token layout and the block-causal mask, transformer.py the blocks and the KV cache,
focal_loss.py the adaptive dynamic focal loss.
"""
