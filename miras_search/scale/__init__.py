"""`miras scale`: points trained on a ladder of model sizes, contexts and budgets, loss fitted
against compute with a power law per point, and the points ranked at a target compute.

study.scale_spec (the ``scale:`` block, no torch) <- compute (FLOPs per token) <- points (what is scaled) <-
runner (trains missing rungs into the study) <- results (fits, ranking) <- plot; session ties
them to a study file or a stand-alone scale study.
"""
