"""The language model: byte embeddings -> n_layers Llama-style blocks -> RMSNorm -> head.

One block:  x -> RMSNorm -> mixer -> + -> RMSNorm -> SwiGLU -> +
Rotary positions (RoPE) go on the softmax-attention layers' q and k only: the Miras block (short
conv, l2-normalised q and k, output norm and gate; the paper's Section 5.4) has none, as in the
recurrent baselines it follows (Gated DeltaNet, Titans): the recurrence itself orders the tokens.
Layer kinds come from ``block.layer_kinds()``:

- ``memory``: the point's memory (MemoryMixer), or softmax attention when the point's memory is
  'none' (window ``memory.window``; the block's short conv unless ``memory.short_conv`` is off,
  as in the ``transformer`` preset, Transformer++);
- ``swa``: sliding-window softmax attention over ``block.window`` tokens;
- ``attention``: full causal softmax attention.

``hybrid: samba`` puts a sliding-window attention mixer (with its own RMSNorm and residual) right
after the memory mixer of every memory layer, before the MLP:
x -> +mem(norm x) -> +swa(norm x) -> +SwiGLU(norm x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from miras_search.errors import BadTokens, NonFiniteError, SequenceTooLong
from miras_search.model.gates import GateProducer
from miras_search.model.layers import SwiGLU
from miras_search.model.mixer import AttentionMixer, MemoryMixer
from miras_search.schema import ModelPoint

IGNORE_INDEX = -100
"""Targets equal to this are left out of the loss (torch's cross-entropy default)."""


def _integer_grid(name: str, ids: object) -> torch.Tensor:
    """``ids`` as torch.long if it is an integer tensor [batch, time] with time >= 1, else
    BadTokens. Every integer dtype is taken: the cast to long comes before any range check, so
    that a uint8 or int8 tensor is not compared in its own narrow type (where 260 wraps)."""
    shape = "[batch, time]"
    if not isinstance(ids, torch.Tensor):
        raise BadTokens(f"{name} must be a torch tensor {shape} of token ids, not {type(ids).__name__}")
    if ids.dtype == torch.bool or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise BadTokens(f"{name} must hold integer token ids (any integer dtype, e.g. torch.long), not {ids.dtype}; "
                        "convert with .long()")
    if ids.dim() != 2:
        hint = f" (one sequence: {name}[None])" if ids.dim() == 1 else ""
        raise BadTokens(f"{name} must be {shape}, got shape {tuple(ids.shape)}{hint}")
    if ids.shape[1] == 0:
        raise BadTokens(f"{name} is empty: {shape} needs at least one token per sequence")
    return ids.long()  # exact for every integer dtype torch can hold an id in (itself when long)


def check_tokens(tokens: object, targets: object, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``tokens`` and ``targets`` as torch.long, or BadTokens naming what is wrong with ``tokens``
    [B, T] (and ``targets`` [B, T] or None): type, shape, an id outside [0, vocab_size) (targets
    may also be IGNORE_INDEX), or no target to count. Any integer dtype is taken (cast to long,
    then checked). The ids are read on a CPU only: on a GPU that read would stall the host until
    the previous step ends (type and shape are checked everywhere)."""
    tokens = _integer_grid("tokens", tokens)
    if targets is not None:
        targets = _integer_grid("targets", targets)
        if targets.shape != tokens.shape:
            raise BadTokens(f"targets have shape {tuple(targets.shape)}, tokens {tuple(tokens.shape)}: "
                            "give one target per token (the next token; IGNORE_INDEX to skip one)")
    if tokens.device.type != "cpu":
        return tokens, targets
    bad_tokens = (tokens < 0) | (tokens >= vocab_size)
    any_bad = bad_tokens.any()
    if isinstance(targets, torch.Tensor):
        bad_targets = ((targets < 0) & (targets != IGNORE_INDEX)) | (targets >= vocab_size)
        none_counted = (targets == IGNORE_INDEX).all()  # the mean loss would be 0 / 0
        any_bad = any_bad | bad_targets.any() | none_counted
    if not bool(any_bad):  # the one sync
        return tokens, targets
    if bool(bad_tokens.any()):
        _out_of_range("tokens", tokens, bad_tokens, vocab_size)
    if bool(bad_targets.any()):
        _out_of_range("targets", targets, bad_targets, vocab_size)
    raise BadTokens(f"every target is IGNORE_INDEX ({IGNORE_INDEX}): no token to compute the loss on")


def _out_of_range(name: str, ids: torch.Tensor, bad: torch.Tensor, vocab_size: int) -> None:
    value = int(ids[bad][0])
    raise BadTokens(f"{name} hold id {value}, outside [0, {vocab_size}) (block.vocab_size: bytes "
                    f"0..255, then the special ids; {int(bad.sum())} such ids)")


def make_mixers(point: ModelPoint, kind: str, layer: int = 0) -> list[nn.Module]:
    """The token mixers of layer ``layer`` of ``kind`` ('memory' | 'swa' | 'attention')."""
    block = point.block
    dims = (block.d_model, block.n_heads, block.head_k, block.head_v)
    if kind == "swa":
        return [AttentionMixer(*dims, window=block.window)]
    if kind == "attention":
        return [AttentionMixer(*dims, window=None)]
    if point.memory.kind == "none":  # softmax attention; with the block's short conv unless Transformer++
        conv_size = block.conv_size if point.memory.short_conv else 0
        first: nn.Module = AttentionMixer(*dims, window=point.memory.window, conv_size=conv_size)
    else:
        first = MemoryMixer(point, layer, block.n_layers)
    if block.hybrid == "samba":
        return [first, AttentionMixer(*dims, window=block.window)]
    return [first]


class Layer(nn.Module):
    """Pre-norm residual block with one or more mixers and a SwiGLU MLP. x: [B, T, D] -> [B, T, D]."""

    def __init__(self, mixers: list[nn.Module], d_model: int, mlp_ratio: float):
        super().__init__()
        self.mixer_norms = nn.ModuleList([nn.RMSNorm(d_model, eps=1e-6) for _ in mixers])
        self.mixers = nn.ModuleList(mixers)
        self.mlp_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mlp = SwiGLU(d_model, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first mixer outside the loop: under train.compile a deep memory's chunk loop breaks
        # the graph (it runs eager), and Dynamo cannot resume a graph broken inside a loop: it
        # would run this whole block eager, norms and MLP included. The other mixers (Samba's
        # attention) never break it.
        x = x + self.mixers[0](self.mixer_norms[0](x))
        for norm, mixer in zip(self.mixer_norms[1:], self.mixers[1:], strict=True):
            x = x + mixer(norm(x))
        return x + self.mlp(self.mlp_norm(x))


class MirasLM(nn.Module):
    """Byte-level causal language model of one design point.

    forward(tokens: [B, T] ids, targets: [B, T] ids | None)  (any integer dtype, cast to long)
        -> logits [B, T, vocab]                      when targets is None
        -> (logits [B, T, vocab], loss scalar)       otherwise (mean cross-entropy, nats/token;
                                                     targets == IGNORE_INDEX are skipped)
    Raises BadTokens for ids that are not an integer [B, T] tensor within [0, vocab) (targets:
    the same shape, IGNORE_INDEX allowed), SequenceTooLong when T > block.max_seq_len and
    NonFiniteError when the loss (or, without
    targets, the logits) is NaN/inf.
    """

    def __init__(self, point: ModelPoint):
        super().__init__()
        self.point = point
        block = point.block
        self.max_seq_len = block.max_seq_len
        self.check_finite = True
        self.embed = nn.Embedding(block.vocab_size, block.d_model)
        self.layers = nn.ModuleList(
            [
                Layer(make_mixers(point, kind, index), block.d_model, block.mlp_ratio)
                for index, kind in enumerate(block.layer_kinds())
            ]
        )
        self.norm = nn.RMSNorm(block.d_model, eps=1e-6)
        self.head = nn.Linear(block.d_model, block.vocab_size, bias=False)
        if block.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # nanoGPT init; residual output projections shrink with depth. ``apply`` visits children
        # first, so a GateProducer re-initialises its own projections after the generic pass.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, GateProducer):
            module.reset_parameters()
        if isinstance(module, (MemoryMixer, AttentionMixer)):
            nn.init.normal_(module.o_proj.weight, std=0.02 / math.sqrt(2 * len(self.layers)))
        elif isinstance(module, SwiGLU):
            nn.init.normal_(module.down.weight, std=0.02 / math.sqrt(2 * len(self.layers)))

    def memory_mixers(self) -> list[MemoryMixer]:
        return [m for m in self.modules() if isinstance(m, MemoryMixer)]

    def kernel_problems(self) -> list[str | None]:
        """Per memory layer, after a forward: None where it ran on a Triton kernel, else why it
        ran the PyTorch form."""
        return [mixer.kernel_problem for mixer in self.memory_mixers()]

    def set_memory_form(
        self, mode: str | None = None, chunk_size: int | None = None, chunk_form: str | None = None
    ) -> None:
        """Switch every memory layer to another execution form (same weights, same math)."""
        for mixer in self.memory_mixers():
            mixer.mode = mode or mixer.mode
            mixer.chunk_size = chunk_size or mixer.chunk_size
            mixer.chunk_form = chunk_form or mixer.chunk_form

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        tokens, targets = check_tokens(tokens, targets, self.embed.num_embeddings)
        logits = self.head(self._hidden(tokens))  # [B, T, vocab]
        if targets is None:
            if self.check_finite and not torch.isfinite(logits).all():
                raise NonFiniteError(self._non_finite("logits", logits.device))
            return logits
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        if self.check_finite and not torch.isfinite(loss):
            raise NonFiniteError(self._non_finite("loss", logits.device))
        return logits, loss

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last layer's output after the final norm, [B, T, D]: what the head reads.
        tokens: [B, T] ids, checked as ``forward`` checks them."""
        tokens, _ = check_tokens(tokens, None, self.embed.num_embeddings)
        return self._hidden(tokens)

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.max_seq_len:
            raise SequenceTooLong(
                f"the input has {length} tokens but block.max_seq_len is {self.max_seq_len}; "
                "shorten the sequences (train.seq_len / the evaluation length) or raise block.max_seq_len"
            )
        x = self.embed(tokens)  # [B, T, D]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def _non_finite(self, what: str, device: torch.device) -> str:
        name = self.point.name or "the point"
        advice = "lower train.lr, or the memory's step (algorithm.eta) and the other gates' values"
        chunks = {mixer.chunk_size for mixer in self.memory_mixers()
                  if mixer.mode == "chunked" and mixer.chunk_form == "minibatch" and mixer.chunk_size > 1}
        if chunks:
            # Measured: matrix memory, lp bias (p=3), l2 retention, momentum at chunk 16 went to
            # inf on a text sequence (float64 too) where chunks of 8 and the recurrence stayed finite.
            advice += (
                f", or a smaller train.chunk_size (now {max(chunks)}: the chunked form takes all of "
                "a chunk's inner steps at its start memory, which can overshoot where the "
                "token-by-token recurrence does not)"
            )
        if torch.is_autocast_enabled(device.type):  # fp32 cannot help a model already in fp32
            advice += ", or use train.precision fp32"
        return (
            f"the {what} of {name} ({', '.join(f'{k} {v}' for k, v in self.point.axes.items())}) "
            f"became NaN or inf in the forward pass; {advice}"
        )
