"""Named points: the paper's Table 1 models, its new models Moneta, Yaad and Memora, and the
Atlas paper's Atlas, OmegaNet and DeepTransformer (arXiv 2505.23735).

Each preset sets only the four axes (and, where the model needs it, the chunk form); block and
training settings keep their defaults so that presets compare on equal footing in a study.
"""

from __future__ import annotations

import difflib
from typing import Any

from miras_search.errors import ConfigError, Problem
from miras_search.schema import AXES, ModelPoint, canonical_data
from miras_search.validation import validate

_HEAD = {"mode": "head"}
_ONE = {"mode": "constant", "value": 1.0}
_DEEP = {"kind": "mlp", "depth": 2, "expansion": 4, "activation": "gelu", "layer_norm": True}
# Retention of a memory whose function ignores its weights' scale (an MLP behind its LayerNorm,
# or lq retention's W = A / ||A||_q^(q-2)) does not forget: decaying the weights only raises the
# effective inner step (the curvature grows as the weights shrink) until the memory is rewritten
# by a fraction of about sqrt(2 (1 - alpha)) per token, whatever eta is. At alpha = 0.95 that is
# about a third, and the inner loop is chaotic; 0.999 keeps it smooth at T = 4096
# (benchmarks/results/inner_loop_stability_cpu.txt).
_SCALE_FREE_ALPHA = {"mode": "head", "value": 0.999}
# Moneta, Yaad and Memora take eta, alpha and delta channel-wise through a rank-32 projection (the
# paper's "Channel-wise Parameters", Section 5.4): eta and alpha one per input channel of each
# memory layer, delta one per value channel. The projection starts at zero, so every channel
# starts at the gate's value (the model at init is the per-head one).
_CHANNEL = {"mode": "channel", "rank": 32}
# Mamba2's decay alpha = exp(-A softplus(w . x + b)) with its initial ranges: A uniform in [1, 16],
# dt log-uniform in [1e-3, 0.1] (heads start between 0.2 and 0.999); Gated DeltaNet (and
# fla's DeltaProduct) draw A from [0, 16]. (value is unused by this mode, as by retnet's schedule;
# it is kept inside the spaces' range so that a space can encode the preset.)
_MAMBA2_DECAY = {"mode": "mamba", "a_init": [1.0, 16.0], "dt_init": [0.001, 0.1]}  # value: unused
_GDN_DECAY = {"mode": "mamba", "a_init": [0.0, 16.0], "dt_init": [0.001, 0.1]}

PRESET_AXES: dict[str, dict[str, Any]] = {
    "linear_attention": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "none"}, "algorithm": {"kind": "gd", "eta": _ONE},
    },
    "retnet": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "l2", "alpha": {"mode": "retnet", "value": 0.97}},
        "algorithm": {"kind": "gd", "eta": _ONE},
    },
    "gla": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "l2", "alpha": {"mode": "channel", "value": 0.95, "rank": 16}},
        "algorithm": {"kind": "gd", "eta": _ONE},
    },
    "mamba2": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "l2", "alpha": _MAMBA2_DECAY},
        "algorithm": {"kind": "gd", "eta": {"mode": "head", "value": 0.5}},
    },
    "deltanet": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "l2"},
        "retention": {"kind": "none"}, "algorithm": {"kind": "gd", "eta": _HEAD},
    },
    "gated_deltanet": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "l2"},
        "retention": {"kind": "l2", "alpha": _GDN_DECAY},
        "algorithm": {"kind": "gd", "eta": _HEAD},
    },
    "longhorn": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "l2"},
        "retention": {"kind": "none"}, "algorithm": {"kind": "implicit", "eta": _HEAD},
    },
    "deltaproduct": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "l2"},
        "retention": {"kind": "l2", "alpha": _GDN_DECAY},
        "algorithm": {"kind": "multistep", "steps": 2, "eta": _HEAD},
    },
    "ttt_linear": {
        "memory": {"kind": "matrix", "init": "learned"}, "bias": {"kind": "l2"},
        "retention": {"kind": "none"}, "algorithm": {"kind": "gd", "eta": _HEAD},
        "train": {"chunk_form": "minibatch"},
    },
    "ttt_mlp": {
        "memory": _DEEP, "bias": {"kind": "l2"},
        # TTT's inner rate is eta_base * sigmoid(theta x) with eta_base 0.1 for TTT-MLP (1 for
        # TTT-Linear): 0.05 at init
        "retention": {"kind": "none"}, "algorithm": {"kind": "gd", "eta": {"mode": "head", "value": 0.05}},
        "train": {"chunk_form": "minibatch"},
    },
    "titans": {
        "memory": _DEEP, "bias": {"kind": "l2"},
        "retention": {"kind": "l2", "gradient_at": "previous", "alpha": _SCALE_FREE_ALPHA},
        "algorithm": {"kind": "momentum", "eta": _HEAD, "theta": {"mode": "head", "value": 0.9}},
    },
    # RWKV-7 (arXiv 2503.14456): the generalized delta rule S_t = S_{t-1} (diag(w_t) - k^T (a_t * k))
    # + v^T kw_t: the gradient at the previous state, a channel-wise decay w_t and in-context
    # learning rate a_t (both low-rank, rank 32 as in RWKV-7's LoRAs; a_t starts at sigmoid(0) =
    # 0.5 as there), and the replacement key kw_t = k * (1 + (a_t - 1) * k_a), k_a from 1.
    "rwkv7": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "l2"},
        "retention": {"kind": "l2", "gradient_at": "previous",
                      "alpha": {"mode": "channel", "value": 0.95, "rank": 32}},
        "algorithm": {"kind": "gd", "write_key": "lerp",
                      "eta": {"mode": "channel", "value": 0.5, "rank": 32}},
    },
    # HGRN2 (arXiv 2404.07904): GLA with the key tied to the forget gate, k_t = 1 - f_t
    # (S_t = S_{t-1} diag(f_t) + v_t (1 - f_t)^T); the gate is channel-wise (rank 64: HGRN2's
    # projection is full rank, ours low rank).
    "hgrn2": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "l2", "alpha": {"mode": "channel", "value": 0.95, "rank": 64}},
        "algorithm": {"kind": "gd", "write_key": "one_minus_alpha", "eta": _ONE},
    },
    # Lightning Attention (TransNormerLLM, arXiv 2307.14995 / 2401.04658): linear attention with a
    # fixed per-head decay exp(-s_h (1 - l / (L - 1) + 1e-5)), s_h ALiBi's slopes, as the authors'
    # released models build it (fla's chunk_lightning_attn uses a linear schedule, -8 h / H (1 - l / L)).
    "lightning_attention": {
        "memory": {"kind": "matrix"}, "bias": {"kind": "dot"},
        "retention": {"kind": "l2", "alpha": {"mode": "alibi", "value": 0.97}},
        "algorithm": {"kind": "gd", "eta": _ONE},
    },
    # Transformer++ (the paper's baseline): RoPE, RMSNorm, SwiGLU and no short conv
    "transformer": {
        "memory": {"kind": "none", "short_conv": False}, "bias": {"kind": "dot"},
        "retention": {"kind": "none"}, "algorithm": {"kind": "none"},
    },
    "moneta": {
        "memory": _DEEP, "bias": {"kind": "lp", "p": 3.0},
        # lq's normalisation drifts further: at head dim 64 and T = 4096, 0.999 is chaotic, and so
        # is 0.9995 for some weight draws (0.11 for 1 of 40); 0.9998 is smooth for all 40 and trains
        # as well
        "retention": {"kind": "lq", "q": 4.0, "alpha": {**_CHANNEL, "value": 0.9998}},
        "algorithm": {"kind": "gd", "eta": _CHANNEL},
    },
    # Yaad's threshold starts among the errors (||e|| is about sqrt(d_v) at init, with a narrow
    # spread, so about half the tokens take each branch) and its l1 branch is delta tanh(e / delta),
    # whose slope at e = 0 is the l2 branch's: with delta tanh(10 e) small errors were amplified
    # 10 delta times per token and the inner loop was chaotic at any retention (README, "Initial gates").
    "yaad": {
        "memory": _DEEP,
        "bias": {"kind": "huber", "variant": "switch", "threshold_units": "sqrt_dv", "sharpness": 1.0,
                 "sharpness_scale": "threshold", "delta": {**_CHANNEL, "value": 0.98}},
        "retention": {"kind": "l2", "gradient_at": "previous", "alpha": {**_SCALE_FREE_ALPHA, **_CHANNEL}},
        "algorithm": {"kind": "gd", "eta": _CHANNEL},
    },
    "memora": {
        "memory": _DEEP, "bias": {"kind": "l2"},
        # kl's alpha scales the log-weights: it flattens each softmax row toward uniform, and
        # behind the memory's LayerNorm a flatter row only raises the effective step (about
        # eta / sigma^2 for row logits of spread sigma), as decay does on the other scale-free
        # memories. At 0.95 Memora stalled in two of three seeds at 4x the quickstart budget
        # (4.81 val_bpb on seed 0, its loss flat from step 40); at 0.999 the same seed trains
        # to 3.15 (benchmarks/results/deep_memory_training_cpu.md).
        "retention": {"kind": "kl", "scale": 1.0, "alpha": {**_CHANNEL, "value": 0.999}},
        # a kl step of 0.5 made the inner loop chaotic at head dim 32 (1e-13 of noise moved the
        # logits by 18 %); at 0.1 it was smooth but did not train past the quickstart's size (loss
        # rising after step 40, 4.82 val_bpb at d_model 128 / 4 layers / 256 steps); 0.02 and
        # below train (benchmarks/results/deep_memory_training_cpu.md). The step is learned and
        # its range bounded to (0, 2 x value): free in (0, 1), the outer optimiser walked some
        # channels' step up 3-6x within 50-70 steps at the 1M-token budget, the inner loop turned
        # chaotic there (gradient norms of 1e4 to 3e7 before clipping, at alpha 0.999 and 0.95
        # alike) and training diverged (loss 2.25 at step 70, 6.3 at step 160). Bounded, 0.02 in
        # (0, 0.04) trained to 2.353 at 1M tokens with 14 gradient spikes above 100, 0.01 in
        # (0, 0.02) to 2.291 with one, and to 4.117 +- 0.010 on the quickstart budget (3 seeds;
        # 0.02: 4.143 +- 0.039): the smaller, calmer step is the preset.
        "algorithm": {"kind": "gd", "eta": {**_CHANNEL, "value": 0.01, "max_ratio": 2.0}},
    },
    # ---- Atlas (Behrouz et al. 2025, arXiv 2505.23735): the Miras authors' next models ----------
    # What the paper leaves open and is chosen here: the window c (4), the feature map's degree
    # (2: 1 + K + K(K+1)/2 features per head, 561 at head dim 32), the gates' initial values (as
    # Titans' preset: alpha 0.999 for an MLP memory behind its LayerNorm, theta 0.9) and Muon's
    # eta (0.05: its step NS(S) has unit singular values, far longer than a gradient step).
    # Atlas (Eqs. 32-33, Table 1): a deep memory read at phi*(k) (Eq. 22), the Omega rule over
    # the last c tokens with learned weights gamma (Eq. 9), the gradient at M_{t-1}, and Muon:
    # S_t = theta_t S_{t-1} + grad, M_t = alpha_t M_{t-1} - eta_t NS-5(S_t).
    "atlas": {
        "memory": {**_DEEP, "feature_map": {"kind": "exponential", "degree": 2}},
        "bias": {"kind": "l2", "window": 4, "gamma": {"mode": "channel", "value": 0.5}},
        "retention": {"kind": "l2", "gradient_at": "previous", "alpha": _SCALE_FREE_ALPHA},
        "algorithm": {"kind": "muon", "ns_steps": 5, "eta": {"mode": "head", "value": 0.05},
                      "theta": {"mode": "head", "value": 0.9}},
    },
    # OmegaNet (Eq. 10): the Omega rule with gradient descent on a deep memory read at a
    # polynomial feature map with learned coefficients (Eq. 5), M_t = alpha_t M_{t-1} - eta_t grad.
    "omeganet": {
        "memory": {**_DEEP, "feature_map": {"kind": "polynomial", "degree": 2}},
        "bias": {"kind": "l2", "window": 4, "gamma": {"mode": "channel", "value": 0.5}},
        "retention": {"kind": "l2", "gradient_at": "previous", "alpha": _SCALE_FREE_ALPHA},
        "algorithm": {"kind": "gd", "eta": _HEAD},
    },
    # DeepTransformer (Eq. 25): the unnormalised Transformer with a deep memory,
    # M_t = M_{t-1} - grad <M_{t-1}(phi*(k_t)), v_t>: dot bias, no retention, eta 1, phi* to
    # degree 2. (Table 1 also lists a decay alpha_t and a rate eta_t for it; Eq. 25 has neither,
    # and with them it is Deep Linear Attention, Eq. 19.)
    "deeptransformer": {
        "memory": {**_DEEP, "feature_map": {"kind": "exponential", "degree": 2}},
        "bias": {"kind": "dot"},
        "retention": {"kind": "none"},
        "algorithm": {"kind": "gd", "eta": _ONE},
    },
}

NAMED_MODELS = ("moneta", "yaad", "memora")
"""The paper's three new models: the points a search tries to beat."""
ATLAS_MODELS = ("atlas", "omeganet", "deeptransformer")
"""The Atlas paper's models (arXiv 2505.23735)."""

BASELINES = ("moneta", "yaad", "memora", "gated_deltanet", "titans", "transformer")
"""Anchors every study measures first, on the same budget as the searched points."""


def preset_names() -> list[str]:
    """The names ``preset`` takes, in ``miras presets``' order: the paper's Table 1 models, then
    Moneta, Yaad and Memora, then the Atlas family."""
    return list(PRESET_AXES)


def preset_hint(name: str) -> str:
    """" (did you mean 'moneta'?); known presets: ..." for a name that is not a preset."""
    close = difflib.get_close_matches(name, PRESET_AXES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; known presets: {', '.join(PRESET_AXES)}"


def is_preset_point(point: ModelPoint) -> bool:
    """Whether ``point`` carries a preset's name and that preset's four axes, every setting of
    them (a Moneta with p = 2.5 is a variant of Moneta, not Moneta)."""
    if point.name not in PRESET_AXES:
        return False
    mine, theirs = canonical_data(point), canonical_data(preset(point.name))  # unused fields aside
    return all(mine[axis] == theirs[axis] for axis in AXES)


def preset(name: str, **overrides: Any) -> ModelPoint:
    """The named preset as a validated ModelPoint; ``overrides`` replace whole top-level sections.

    ConfigError, naming the field and what it allows, for an unknown name or a bad override.
    """
    if not isinstance(name, str):
        raise ConfigError("preset(...)", [Problem("name", f"a preset's name is text, one of "
                                                  f"{', '.join(PRESET_AXES)}; got {type(name).__name__}")])
    if name not in PRESET_AXES:
        raise ConfigError(f"preset '{name}'", [Problem("", f"unknown preset '{name}'{preset_hint(name)}")])
    data = {"name": name, **PRESET_AXES[name], **overrides}
    source = f"preset('{name}')" + (f" with overrides {sorted(overrides)}" if overrides else "")
    return validate(ModelPoint, data, source)
