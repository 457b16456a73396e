"""``MirasConfig`` (the point, as JSON data), ``MirasForCausalLM`` (a MirasLM inside a
PreTrainedModel) and ``MirasModel`` (the same without its head: the final hidden states),
registered with AutoConfig / AutoModelForCausalLM / AutoModel as model type ``miras``. Both
models keep the MirasLM under ``miras``, so either loads the other's saved folder.

``generate`` works without a key/value cache: every step runs the whole prefix through the
model (a memory layer's state is rebuilt from the tokens), which is exact and, at the sizes the
toolkit trains, fast enough for evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from miras_search.data.vocab import EOS, IGNORE_INDEX, PAD
from miras_search.errors import BadTokens, ConfigError, Problem
from miras_search.schema import ModelPoint


class MirasConfig(PretrainedConfig):
    """The configuration of a Miras model: ``point`` is the ModelPoint as JSON data (memory,
    bias, retention, algorithm, block, ...); vocab_size and the special ids follow from it."""

    model_type = "miras"

    def __init__(self, point: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.point = point or ModelPoint().model_dump(mode="json")
        block = self.point.get("block") if isinstance(self.point, dict) else None
        block = block if isinstance(block, dict) else {}
        kwargs.setdefault("vocab_size", block.get("vocab_size", ModelPoint().block.vocab_size))
        kwargs.setdefault("eos_token_id", EOS)
        kwargs.setdefault("pad_token_id", PAD)
        kwargs.setdefault("tie_word_embeddings", bool(block.get("tie_embeddings", ModelPoint().block.tie_embeddings)))
        super().__init__(**kwargs)

    @property
    def model_point(self) -> ModelPoint:
        """The point, validated: a ConfigError naming ``<folder>/config.json: point.<field>``
        (the folder the config was read from, when it was) and what is allowed."""
        from miras_search.validation import validate

        folder = str(getattr(self, "_name_or_path", "") or "")
        source = f"{folder.rstrip('/')}/config.json" if folder else "MirasConfig"
        if not isinstance(self.point, dict):
            raise ConfigError(source, [Problem("point", f"must be a mapping of a point's fields, not "
                                                        f"{type(self.point).__name__}")])
        return validate(ModelPoint, self.point, source, prefix=("point",))


class MirasPreTrainedModel(PreTrainedModel):
    """What the Miras models share: the MirasLM under ``miras`` (tied head and embedding when the
    point ties them) and the checks of their inputs."""

    config_class = MirasConfig
    base_model_prefix = "miras"
    main_input_name = "input_ids"
    _supports_cache_class = False

    def __init__(self, config: MirasConfig) -> None:
        super().__init__(config)
        from miras_search.model.lm import MirasLM

        self.miras = MirasLM(config.model_point)
        # the MirasLM ties its output head to the embedding itself; saving stores the tensor once
        self._tied_weights_keys = {"miras.head.weight": "miras.embed.weight"} if config.tie_word_embeddings else {}

    def _init_weights(self, module: torch.nn.Module) -> None:
        """The MirasLM initialises its own weights when built; nothing to redo here."""

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.miras.embed

    @staticmethod
    def _token_ids(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                   inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """input_ids [B, T], or BadTokens saying what a Miras model reads instead."""
        if inputs_embeds is not None:
            raise BadTokens("inputs_embeds is not supported: a Miras model reads token ids; give input_ids "
                            "[batch, time] (the embedding is get_input_embeddings())")
        if input_ids is None:
            raise BadTokens("input_ids is missing: give the token ids [batch, time]")
        if attention_mask is not None and _padded_before_tokens(attention_mask):
            raise BadTokens(
                "attention_mask has padding before tokens (left padding, as batched generate "
                "pads): a Miras memory reads every position in order, pads included, so they would "
                "change what it holds; give sequences one at a time, or pad on the right where "
                "only scores are needed (lm-eval's loglikelihood)")
        return input_ids


class MirasModel(MirasPreTrainedModel):
    """The Miras model without its head (``AutoModel``).

    forward(input_ids [B, T]) -> BaseModelOutput(last_hidden_state [B, T, D]): the last layer's
    output after the final norm, what the causal LM's head reads.
    """

    def __init__(self, config: MirasConfig) -> None:
        super().__init__(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **_: Any) -> BaseModelOutput:
        input_ids = self._token_ids(input_ids, attention_mask, inputs_embeds)
        return BaseModelOutput(last_hidden_state=self.miras.hidden_states(input_ids))


class MirasForCausalLM(MirasPreTrainedModel, GenerationMixin):
    """A causal language model over a point of the Miras design space.

    forward(input_ids [B, T], labels [B, T] optional) -> CausalLMOutput(logits [B, T, V], loss):
    labels are the inputs (shifted inside, as Hugging Face models do); -100 marks no loss.
    """

    def __init__(self, config: MirasConfig) -> None:
        super().__init__(config)
        self.generation_config = GenerationConfig(use_cache=False, eos_token_id=EOS, pad_token_id=PAD)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_: Any) -> CausalLMOutput:
        input_ids = self._token_ids(input_ids, attention_mask, inputs_embeds)
        logits = self.miras(input_ids)  # [B, T, V]
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            if attention_mask is not None:
                targets = targets.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                ignore_index=IGNORE_INDEX)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        # no cache: the whole prefix each step; the mask goes on so that forward can refuse pads
        return {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask")}


def _padded_before_tokens(attention_mask: torch.Tensor) -> bool:
    """Whether some row [T] has a 0 before a 1: ``mask`` [B, T], 1 = token, 0 = padding."""
    mask = attention_mask.bool()
    token_at_or_after = mask.flip(1).cummax(1).values.flip(1)  # [B, T]: a token at or after t
    return bool((~mask & token_at_or_after).any())


def from_checkpoint(path: str | Path) -> MirasForCausalLM:
    """A MirasForCausalLM with a checkpoint's point and weights (eval mode, CPU)."""
    from miras_search.trial.checkpoint import load_weights, read_checkpoint

    checkpoint = read_checkpoint(path)
    model = MirasForCausalLM(MirasConfig(point=checkpoint.point.model_dump(mode="json")))
    load_weights(model.miras, checkpoint, str(path))
    return model.eval()


AutoConfig.register(MirasConfig.model_type, MirasConfig, exist_ok=True)
AutoModelForCausalLM.register(MirasConfig, MirasForCausalLM, exist_ok=True)
AutoModel.register(MirasConfig, MirasModel, exist_ok=True)
