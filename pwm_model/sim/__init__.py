"""Closed-loop driving in the synthetic world: the planner drives, and is scored as NAVSIM and Bench2Drive score.

Modules: ``planned_ego`` (the tracker that follows plans on the world's kinematic bicycle), ``planners`` (model
directories, kinematic and ego-status baselines behind one ``step`` call), ``loop`` (one drive), ``score`` (EPDMS,
route completion, driving score, infractions), ``suite`` (many drives, intervals, tables).
"""
