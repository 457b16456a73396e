"""Experiment tracking of studies (W&B, offline by default)."""

from miras_search.tracking.wandb_tracker import WandbTracker

__all__ = ["WandbTracker"]
