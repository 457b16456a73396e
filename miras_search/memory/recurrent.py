"""The token-by-token recurrence: the obviously-right reference every fast form is tested against.

Per micro-step i (per head): P = the point the retention takes the gradient at (alpha_i M_{i-1}
for l2 retention, "retain, then learn"; M_{i-1} otherwise); pred = P(k_i); g = dl/dpred (bias);
G = g back-propagated through P at k_i; the algorithm's ``step`` makes the step from G (gd:
-eta_i G; momentum: S_i = theta_i S_{i-1} - eta_i G; Muon, Atlas arXiv 2505.23735 Eqs. 32-33:
S_i = theta_i S_{i-1} + G, the step -eta_i NS_k(S_i)); the retention rule forms M_i from M_{i-1}
and the step. A token's output is M(q) read after its last micro-step.
With the Omega rule's window (Eq. 9) G sums the gradients of the window's c tokens at P, each
weighted by its gamma.
With a separate write key w_i (RWKV-7) the value part of the step is v_i w_i^T instead of
eta_i v_i k_i^T: S_i = -(P k_i)(eta_i * k_i)^T + v_i w_i^T for the matrix memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from miras_search.memory.inputs import MemoryInputs, layer_gates
from miras_search.memory.rule import MemoryRule, MemoryState


def memory_gradients(rule: MemoryRule, weights: list[Tensor], k: Tensor, v: Tensor,
                     delta: Tensor | None,
                     scales: list[Tensor | None] | None = None) -> list[tuple[Tensor, Tensor]]:
    """Per-layer (delta_l, x_l) of the bias gradient; k: [B, H, N, K], v: [B, H, N, V].

    Token i's gradient is taken at the weights W_l diag(s_li) (``scales``: per layer, s_l
    [B, H, N, c_l] with c_l = 1 or layer l's input width) or at ``weights`` themselves (None),
    without forming per-token weights: (W diag(s)) z = W (s * z) in the forward, the same scale
    on the signal going back, and x_l stays the unscaled input (the gradient is w.r.t. the point
    W diag(s), not through the scale).
    """
    layers = rule.network.layers

    def apply(layer: int, z: Tensor) -> Tensor:
        scale = None if scales is None else scales[layer]
        return layers[layer].apply(weights[layer], z if scale is None else z * scale)

    pred, cache = rule.network.run(apply, k)
    g = rule.bias.grad(pred, v, delta)
    return rule.network.backward(weights, cache, g, scales)


def gradient_point(rule: MemoryRule, weights: list[Tensor], decay: Tensor | None) -> list[Tensor]:
    """The weights the step's gradient is taken at, materialised: W_l diag(s_l), s from the
    retention (alpha W for l2 retention, W otherwise); ``decay``: [B, H, 1, c] | None, c = 1 or
    channel-wise (every layer's input channels, see ``layer_gates``)."""
    scale = rule.retention.gradient_scale(decay)
    if scale is None:
        return weights
    return [s * w for s, w in zip(layer_gates(scale, input_widths(weights)), weights, strict=True)]


def input_widths(weights: list[Tensor]) -> list[int]:
    """The input width of each memory weight [B, H, out, in] (where a channel-wise gate acts)."""
    return [w.shape[-1] for w in weights]


def algorithm_steps(rule: MemoryRule, grads: list[tuple[Tensor, Tensor]], etas: list[Tensor | None],
                    theta: Tensor | None, buffers: list[Tensor] | None
                    ) -> tuple[list[Tensor], list[Tensor | None]]:
    """Per memory weight, the algorithm's step from the gradient factors (delta_l, x_l) of
    ``memory_gradients``, with eta_l [B, H, 1, c_l] | None, theta [B, H, 1, 1] | None and the buffers
    (None: the algorithm has none). Returns the steps and the new buffers, [B, H, out, in] each."""
    layers = rule.network.layers
    steps, new_buffers = [], []
    for i, (layer, eta, (d, inp)) in enumerate(zip(layers, etas, grads, strict=True)):
        step, buffer = rule.optimiser.step(layer.grad(d, inp), eta, theta, None if buffers is None else buffers[i])
        steps.append(step)
        new_buffers.append(buffer)
    return steps, new_buffers


def recurrent_step(rule: MemoryRule, state: MemoryState, x: MemoryInputs) -> MemoryState:
    """One micro-step; ``x`` holds a single micro-step (N = 1)."""
    point = gradient_point(rule, state.w, x.alpha)
    # the Omega rule (Atlas): the gradients of the window's c tokens, weighted by gamma, at the
    # same point; without a window the token's own (k, v) and weight 1
    k, v, delta, weight, _ = x.gradient_terms()
    # with a separate write key the gradient step only removes (its value part is 0) and the
    # value is written with that key instead of eta * k (RWKV-7's generalized delta rule)
    v = v if x.write is None else torch.zeros_like(v)
    grads = memory_gradients(rule, point, k, v, delta)
    if weight is not None:
        grads = [(d, weight * inp) for d, inp in grads]
    widths = input_widths(state.w)
    etas, alphas = layer_gates(x.eta, widths), layer_gates(x.alpha, widths)
    steps, new_s = algorithm_steps(rule, grads, etas, x.theta, state.s)
    if x.write is not None:
        steps[0] = steps[0] + rule.network.layers[0].grad(x.v, x.write)
    new_w, new_a = [], []
    for layer in range(len(steps)):
        a_prev = None if state.a is None else state.a[layer]
        w_l, a_l = rule.retention.update(state.w[layer], a_prev, steps[layer], alphas[layer])
        new_w.append(w_l)
        new_a.append(a_l)
    return MemoryState(new_w, None if state.a is None else new_a, None if state.s is None else new_s)


def recurrent(rule: MemoryRule, x: MemoryInputs, state: MemoryState) -> Tensor:
    """Outputs at every micro-step [B, H, N, V] (read after that micro-step's update)."""
    outputs = []
    for i, step in enumerate(x.split(1)):
        state = recurrent_step(rule, state, step)
        if (i + 1) % x.steps == 0:
            outputs.append(rule.network.forward(state.w, step.q))
        else:  # not a token's last micro-step: nothing is read here
            outputs.append(torch.zeros_like(step.v))
    return torch.cat(outputs, dim=2)
