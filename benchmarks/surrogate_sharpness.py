"""Does the smooth sign's sharpness c make Yaad's inner loop chaotic?

    python benchmarks/surrogate_sharpness.py [--tokens 512] [--out FILE]

Noise sensitivity (``miras_search.model.noise_sensitivity``: the relative change of a float64
LM's logits at initialisation when its embeddings get 1e-12 of relative noise) of Yaad as shipped
(tanh(10 e)) against sharpness choices from ``miras_search.memory.surrogates``: an absolute c at
the descent bound 2 / (eta delta) of its initial gates, and c relative to the threshold,
tanh(rho e / delta_t). Head dims 32 and 64 (d_model 64 / 128, 2 heads, 2 layers). A smooth model
answers about 1e-12 x its condition number; a chaotic inner loop answers O(1e-2 .. 1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from miras_search.model import noise_sensitivity
from miras_search.presets import preset

ROWS: dict[str, dict[str, dict]] = {  # label -> {section: changes}
    "yaad (tanh(10 e), shipped)": {},
    "c = 4 (= 2 / (eta delta) at init)": {"bias": {"sharpness": 4.0}},
    "c = 1": {"bias": {"sharpness": 1.0}},
    "threshold, rho = 1: tanh(e / delta_t)": {"bias": {"sharpness": 1.0, "sharpness_scale": "threshold"}},
    "threshold, rho = 0.5": {"bias": {"sharpness": 0.5, "sharpness_scale": "threshold"}},
    # the MLP memory's curvature along the step is far above ||k||^2 = 1 (LayerNorm): the bound
    # needs eta * kappa small, which only a smaller step gives
    "threshold, rho = 1, eta 0.01": {"bias": {"sharpness": 1.0, "sharpness_scale": "threshold"},
                                     "algorithm": {"eta": {"mode": "head", "value": 0.01}}},
    "tanh(10 e), eta 0.01": {"algorithm": {"eta": {"mode": "head", "value": 0.01}}},
    # issue 24's stable start: threshold near the error norm sqrt(d_v), retention 0.999
    "delta 5.7, alpha 0.999, tanh(10 e)": {
        "bias": {"delta": {"mode": "head", "value": 5.7}},
        "retention": {"alpha": {"mode": "head", "value": 0.999}}},
    "delta 5.7, alpha 0.999, threshold rho = 1": {
        "bias": {"delta": {"mode": "head", "value": 5.7}, "sharpness": 1.0, "sharpness_scale": "threshold"},
        "retention": {"alpha": {"mode": "head", "value": 0.999}}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [f"Yaad's noise sensitivity at init, 1e-12 noise, {args.tokens} tokens, float64 CPU",
             "", "| variant | head dim 32 | head dim 64 |", "|---|---|---|"]
    for label, change in ROWS.items():
        cells = []
        for d_model in (64, 128):
            base = preset("yaad").model_dump()
            sections = {name: {**base[name], **values} for name, values in change.items()}
            point = preset("yaad", **sections, block={"d_model": d_model, "n_heads": 2, "n_layers": 2,
                                                      "max_seq_len": args.tokens})
            start = time.perf_counter()
            moved = noise_sensitivity(point, noise=1e-12, tokens=args.tokens)
            cells.append(f"{moved:.1e}")
            print(f"{label} d_model {d_model}: {moved:.2e} ({time.perf_counter() - start:.0f} s)", flush=True)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
