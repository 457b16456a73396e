"""Axis 4, memory learning algorithm: the online optimiser that applies the bias and retention.

One class per algorithm, each a subclass of ``MemoryAlgorithm``: its fields (the schema) and its
``step``, the update of one memory weight from the inner loss's gradient. A subclass that
declares its own ``kind`` registers itself; ``Algorithm`` (the discriminated union),
``ALGORITHM_KINDS`` and the tables are derived from the registry.

The math works through tensor methods (and ``miras_search.primitives``): this module imports no
torch at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from miras_search import primitives
from miras_search.schema._base import AxisOption
from miras_search.schema.gates import Gate, check_gate_range, gate_field

if TYPE_CHECKING:
    from torch import Tensor


class MemoryAlgorithm(AxisOption):
    """Base of every memory learning algorithm; a subclass with its own ``kind`` registers itself.

    An option defines ``step``. Its gates are its ``Gate`` fields: ``eta`` (the inner learning
    rate) and ``theta`` (a momentum decay) are the ones the memory ops feed to it. By default its
    chunked form materialises per-token weights (``memory/materialised.py``: every gradient of a
    chunk at the chunk's start memory, then the steps token by token, exact at chunk 1), which
    covers memories 'matrix' and 'mlp' with retention 'none' or 'l2'; gd's and momentum's steps,
    linear in the gradients (``linear_chunks``), run the linear form instead.
    """

    registry: ClassVar[dict[str, type[MemoryAlgorithm]]] = {}
    axis: ClassVar[str] = "algorithm"
    role: ClassVar[str] = "the online optimiser"
    required_hooks: ClassVar[tuple[tuple[str, ...], ...]] = (("step",),)
    buffered: ClassVar[bool] = False
    """Whether the memory state carries a buffer per memory weight (zeros at the start; momentum,
    Muon), which ``step`` reads and returns."""
    takes_window: ClassVar[bool] = True
    """Whether the Omega rule's window (``bias.window`` > 1) may feed it a window's gradients."""

    @property
    def steps_per_token(self) -> int:
        """Inner steps per token, each on its own key, value and eta."""
        return 1

    @property
    def linear_chunks(self) -> bool:
        """Whether the step is the descent step -eta_t G_t or Titans' momentum of it (linear in
        the gradients): the chunked form then never forms per-token weights (``memory/chunked.py``
        computes those two steps itself, so a class that overrides ``step`` is never taken for one
        of them)."""
        return type(self).step in _LINEAR_STEPS

    def step(self, grad: Tensor, eta: Tensor | None, theta: Tensor | None,
             buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One memory weight's update; leading dims are batch dims throughout.

        grad: [..., out, in], the inner loss's gradient at the point the retention takes it (with
        the Omega window: the window's gamma-weighted sum); eta: [..., 1, c] (c = 1 or the
        weight's input width) or None (no eta gate); theta: [..., 1, 1] or None (no theta gate);
        buffer: [..., out, in] (``buffered``) or None. Returns the step S added to the retained
        memory (W_t = retention(W_{t-1}, S)), [..., out, in], and the new buffer or None.
        """
        raise NotImplementedError

    def chunk_steps(self, grads: Tensor, eta: Tensor | None, theta: Tensor | None,
                    buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The steps of a chunk's b tokens, every gradient taken at the chunk's start memory.

        grads: [B, H, b, out, in]; eta: [B, H, b, 1, c] | None; theta: [B, H, b, 1, 1] | None; buffer:
        [B, H, out, in] at the chunk's start, or None. Returns the steps [B, H, b, out, in] and
        every token's buffer [B, H, b, out, in] (None without one). By default ``step`` on all
        tokens at once where there is no buffer, else token by token.
        """
        if buffer is None:
            return self.step(grads, eta, theta, None)
        import torch

        steps, buffers = [], []
        for t in range(grads.shape[2]):
            step, buffer = self.step(grads[:, :, t], None if eta is None else eta[:, :, t],
                                     None if theta is None else theta[:, :, t], buffer)
            steps.append(step)
            buffers.append(buffer)
        return torch.stack(steps, 2), torch.stack(buffers, 2)


class _Stepping(MemoryAlgorithm):
    """An algorithm with an inner learning rate eta > 0."""

    eta: Gate = gate_field(0.5)

    @model_validator(mode="after")
    def _eta_range(self) -> _Stepping:
        check_gate_range(self.eta, "eta", 0.0, 1e3)
        return self


class _Descent(_Stepping):
    """An algorithm whose step is the plain descent step S_t = -eta_t G_t."""

    def step(self, grad: Tensor, eta: Tensor, theta: Tensor | None,
             buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return -eta * grad, None


WriteKey = Literal["key", "one_minus_alpha", "lerp"]


class GD(_Descent):
    """S_t = -eta_t grad_t.

    ``write_key`` says which key the value is written with (the ``v_t x^T`` part of the step):

    - ``key``: the key itself, scaled by eta (the plain gradient step; every Table-1 row but two).
    - ``one_minus_alpha``: the key is ``1 - alpha_t`` (HGRN2: the input gate tied to the forget
      gate, ``W_t = W_{t-1} diag(alpha_t) + eta_t v_t (1 - alpha_t)^T``); needs a dot bias.
    - ``lerp``: an l2 (delta-rule) step whose removal part keeps ``eta_t * k_t`` while the value
      is written with ``k_t * (1 + (eta_t - 1) * a)``, ``a`` a learned per-channel vector
      starting at 1 (RWKV-7's replacement key; the plain delta rule at initialisation):
      ``W_t = alpha_t W_{t-1} - (W_{t-1} k_t)(eta_t * k_t)^T + v_t kw_t^T``; needs an l2 bias.
    """

    kind: Literal["gd"] = "gd"
    summary: ClassVar[str] = "write key: the key, HGRN2's `1 - alpha`, RWKV-7's replacement key"
    write_key: WriteKey = Field(
        "key",
        description="The key the value is written with: 'key' (eta * k, the gradient step), "
        "'one_minus_alpha' (HGRN2: 1 - alpha_t, dot bias) or 'lerp' (RWKV-7: "
        "k * (1 + (eta - 1) * a), a learned, l2 bias).",
    )


def _check_momentum_theta(theta: Gate) -> None:
    """The momentum gate of Momentum and Muon: in (0, 1), a scalar per head at most."""
    check_gate_range(theta, "theta", 0.0, 1.0, high_open=True)
    if theta.mode == "channel":
        raise ValueError("theta.mode 'channel' is not supported; use 'constant' or 'head'")


class Momentum(_Stepping):
    """S_t = theta_t S_{t-1} - eta_t grad_t (Titans)."""

    kind: Literal["momentum"] = "momentum"
    summary: ClassVar[str] = "Titans"
    buffered: ClassVar[bool] = True
    theta: Gate = gate_field(0.9)

    @model_validator(mode="after")
    def _theta_range(self) -> Momentum:
        _check_momentum_theta(self.theta)
        return self

    def step(self, grad: Tensor, eta: Tensor, theta: Tensor | None,
             buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        momentum = theta * buffer - eta * grad
        return momentum, momentum


class Implicit(_Descent):
    """W_t = argmin_W l(W; k_t, v_t) + ||W - W_{t-1}||^2 / (2 eta_t) (Longhorn)."""

    kind: Literal["implicit"] = "implicit"
    summary: ClassVar[str] = "Longhorn"
    takes_window: ClassVar[bool] = False


class Multistep(_Descent):
    """``steps`` inner gd steps per token, each on its own key/value and eta (DeltaProduct)."""

    kind: Literal["multistep"] = "multistep"
    summary: ClassVar[str] = "DeltaProduct"
    takes_window: ClassVar[bool] = False
    steps: int = Field(2, ge=2, le=8)

    @property
    def steps_per_token(self) -> int:
        return self.steps

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "multistep", "steps": 2}]


class Muon(_Stepping):
    """Atlas's optimiser (Behrouz et al. 2025, arXiv 2505.23735, Eqs. 32-33): momentum of the
    gradients, the step orthogonalised by ``ns_steps`` Newton-Schulz iterations, per memory
    weight matrix (each MLP layer on its own):

        S_t = theta_t S_{t-1} + grad_t,    M_t = alpha_t M_{t-1} - eta_t NewtonSchulz-k(S_t).

    (Table 1 writes ``S_t = theta_t S_{t-1} - grad``, Eq. 33 ``+ grad``: Newton-Schulz is odd,
    NS(-S) = -NS(S), so both give this descent step.) eta stays outside the orthogonalisation:
    Newton-Schulz normalises its input, so an eta inside (as Eq. 35 writes it) would cancel.
    The chunked form computes every gradient of a chunk at its start memory (the paper's parallel
    form, Eqs. 34-41): exact at chunk 1, an approximation for longer chunks.
    """

    kind: Literal["muon"] = "muon"
    summary: ClassVar[str] = "Atlas: momentum + Newton-Schulz"
    buffered: ClassVar[bool] = True
    theta: Gate = gate_field(0.9)
    ns_steps: int = Field(
        5, ge=1, le=10,
        description="Newton-Schulz iterations k on each step (Muon's 5; more: closer to the "
        "nearest semi-orthogonal matrix).",
    )
    eta: Gate = gate_field(0.05)

    @model_validator(mode="after")
    def _theta_range(self) -> Muon:
        _check_momentum_theta(self.theta)
        return self

    def label(self) -> str:
        return f"muon (k={self.ns_steps})"

    def step(self, grad: Tensor, eta: Tensor, theta: Tensor | None,
             buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        momentum = theta * buffer + grad
        return -eta * primitives.newton_schulz(momentum, self.ns_steps), momentum

    def chunk_steps(self, grads: Tensor, eta: Tensor | None, theta: Tensor | None,
                    buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """In closed form (Eq. 39): S_t = Theta_t S_0 + sum_{i<=t} (Theta_t / Theta_i) G_i,
        Theta_t = prod_{j<=t} theta_j, then one batched Newton-Schulz over the chunk."""
        log_theta = primitives.prefix_sum(theta.log()[..., 0, 0], 2)  # [B, H, b]
        ratios = primitives.decay_matrix(log_theta)  # [B, H, b(t), b(i)]
        carried = log_theta.exp()[..., None, None] * buffer.unsqueeze(2)
        momenta = carried + (ratios @ grads.flatten(3)).view_as(grads)
        return -eta * primitives.newton_schulz(momenta, self.ns_steps), momenta

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "muon", "ns_steps": 3}]


class NoAlgorithm(MemoryAlgorithm):
    """No online optimiser: only for memory 'none' (softmax attention)."""

    kind: Literal["none"] = "none"
    summary: ClassVar[str] = "with memory `none` only"
    takes_window: ClassVar[bool] = False

    def step(self, grad: Tensor, eta: Tensor, theta: Tensor | None,
             buffer: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise TypeError("algorithm 'none' takes no step: it goes with memory 'none' (softmax "
                        "attention), which has no memory to update")

    @classmethod
    def examples(cls) -> list[dict]:
        return []  # softmax attention: no memory rule


_LINEAR_STEPS = (_Descent.step, Momentum.step)
"""The steps the linear chunked form computes itself (``MemoryAlgorithm.linear_chunks``)."""

Algorithm = MemoryAlgorithm.union()
ALGORITHM_KINDS = MemoryAlgorithm.kinds()
