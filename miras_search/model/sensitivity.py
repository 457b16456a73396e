"""How much a point's language model at initialisation moves under rounding-size input noise.

An inner loop whose perturbations grow by a fixed factor per token (a chaotic memory) makes the
model's outputs and gradients depend on rounding; such points train badly, and a kernel cannot
match the PyTorch form on them beyond a few hundred tokens.
"""

from __future__ import annotations

import torch

from miras_search.model.factory import build_model
from miras_search.schema import ModelPoint


def noise_sensitivity(point: ModelPoint, noise: float = 1e-12, tokens: int = 512, batch: int = 2,
                      seed: int = 0) -> float:
    """||logits(noisy) - logits|| / ||logits|| of the float64 model on CPU, the embedding weights
    multiplied by (1 + noise * N(0, 1)); random token ids [batch, tokens], weights drawn with
    ``seed``. About noise x (the model's condition number) for a smooth model, O(1) for a chaotic one.
    """
    torch.manual_seed(seed)
    model = build_model(point, "cpu").double()
    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
    ids = torch.randint(0, embedding.num_embeddings, (batch, tokens), generator=torch.Generator().manual_seed(seed))
    draw = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        clean = model(ids)
        embedding.weight.mul_(1 + noise * torch.randn(embedding.weight.shape, generator=draw, dtype=torch.float64))
        noisy = model(ids)
    return ((noisy - clean).norm() / clean.norm()).item()
