"""Point -> language model: gate producers, token mixers, the LM, the factory and a train loop."""

from miras_search.model.branch_shares import l2_branch_shares
from miras_search.model.factory import (
    autocast_context,
    build_model,
    layer_state_sizes,
    memory_state_size,
    param_count,
    pick_device,
    state_size,
)
from miras_search.model.gates import GateProducer
from miras_search.model.lm import IGNORE_INDEX, MirasLM
from miras_search.model.mixer import AttentionMixer, MemoryMixer
from miras_search.model.quick_train import StepInfo, TrainResult, lr_at, train_tokens
from miras_search.model.sensitivity import noise_sensitivity

__all__ = [
    "IGNORE_INDEX",
    "AttentionMixer",
    "GateProducer",
    "MemoryMixer",
    "MirasLM",
    "StepInfo",
    "TrainResult",
    "autocast_context",
    "build_model",
    "l2_branch_shares",
    "layer_state_sizes",
    "lr_at",
    "memory_state_size",
    "noise_sensitivity",
    "param_count",
    "pick_device",
    "state_size",
    "train_tokens",
]
