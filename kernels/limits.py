"""The shapes the Triton kernels take, in one place for the kernels' input checks and dispatch."""

from __future__ import annotations

CHUNK_SIZES = (16, 32, 64)
CALIBRATED_TRITON = (3, 6)
"""The oldest Triton the limits below were measured with (3.6 and 3.9). Older ones (3.2 compiles
the kernels too) lay some kernels out with more shared memory (the matrix backward with tf32x3
products: 288 KiB against 3.9's 192), so dispatch uses them only when a kernel is forced."""
MATRIX_MIN_DIM = 16
MATRIX_MAX_DIM = {
    "bf16": {"tiled": 256, "row_norm": 128},
    "tf32x3": {"tiled": 128, "row_norm": 64},
    "fp32": {"tiled": 128, "row_norm": 64},
}
"""Largest K, V of the matrix-memory kernel, by the precision of its products (bf16, tf32x3 or
fp32: see kernels.precision) and the bias. The row-norm biases (huber_norm, huber_switch,
robust) keep whole value rows on chip; the others tile V. Measured
with compile_check on sm_90 (an H100 allows 227 KiB of shared memory per program): at
K = V = 256, chunk 64, the tiled biases need 68 to 148 KiB in bf16 but up to 240 (gla's
channel-wise decay) in fp32; huber_switch needs 264 KiB in bf16 already at chunk 16, and the
fp32 backward of the row-norm biases overflows past 64."""


MLP_MAX_TILES = {
    "bf16": {"chunk x (K + hidden)": 10240, "K x hidden": 16384, "chunk x chunk": 4096},
    "tf32x3": {"chunk x (K + hidden)": 5120, "K x hidden": 4096, "chunk x chunk": 1024},
    "fp32": {"chunk x (K + hidden)": 5120, "K x hidden": 4096, "chunk x chunk": 4096},
}
"""Largest tiles (elements) of the MLP-memory kernel, by the precision of its products (bf16
operands, or fp32 ones: fp32 inputs, and bf16 inputs whose math needs them, see
kernels.precision). 'tf32x3' products need about the room of fp32 'ieee' ones (Moneta at
K=32 / hidden 128 / chunk 32: 200 KiB against 188) but not at chunk 64, whose [chunk, chunk]
tiles they keep as fp32 operands (K=16 / hidden 64: 240 to 272 KiB against ieee's 152 to 204).

A program keeps W1, W2 [hidden, K] (and with momentum their momenta) and the segment's
[chunk, hidden] and [chunk, K] activations on chip. Past these sizes the backward needs more
shared memory than an H100 has (227 KiB), or more registers than ptxas can give one instruction
(K=128, hidden=512); fp32 operands take more than twice bf16's room (fp32 'ieee' products run
on FMA layouts, not tensor cores). Measured for the named
models on sm_90 with Triton 3.9 (compile_check, no GPU needed): Titans at K=64, hidden 128,
chunk 64 (chunk x (K + hidden) = 12288) needs 264 KiB, K=64 / hidden 256 / chunk 32 (10240) at
most 172 KiB; with tf32x3 products K=64 / hidden 256 needs 290 to 328 KiB already at chunk 16.
benchmarks/results/kernel_resources_sm90.md lists the widest admitted shapes. A smaller GPU that
refuses a launch inside these bounds gets the PyTorch form with a KernelFallbackWarning.
"""


MLP_TILED_MAX_K = 64
MLP_TILED_MAX_CHUNK_K = {"bf16": 4096, "tf32x3": 4096, "fp32": 2048}
MLP_HIDDEN_TILE = 32
"""The hidden-tiled MLP kernel (mlp_chunk/tiled.py) takes K up to MLP_TILED_MAX_K with chunk x K
up to MLP_TILED_MAX_CHUNK_K (by the precision of the products) and any hidden dim (a power of
two), in tiles of MLP_HIDDEN_TILE units (or the whole hidden dim if smaller): only [chunk,
tile], [tile, K], [chunk, K] and [chunk, chunk] blocks are on chip at once, so its room grows
with the chunk, K and the tile but not with the hidden dim. Dispatch gives it the shapes that do
not fit MLP_MAX_TILES (the named models at K = 64, hidden 256 with their LayerNorm), with per-head
or channel-wise gates alike. Measured with compile_check on sm_90 (Triton 3.9), the backward
being the larger: K = 64, chunk 64, tile 32 needs 160 to 176 KiB with bf16 or tf32x3 products
(every named model, per-head gates), a tile of 64 there 272 KiB; fp32 'ieee' products need 140
KiB at chunk 32 and 248 KiB at chunk 64 (204 KiB with a tile of 16), so fp32 stops at chunk x K
= 2048. Moneta's and Yaad's own channel-wise gates (eta, alpha, Yaad's delta: the decayed
scores of tl_ops._scores) need more but fit the same limits: at chunk 64 (tf32x3) 208 and 212
KiB of the H100's 227, at chunks 16 / 32 58 / 104 KiB at most, with fp32 products at chunks 16 /
32 63 / 88 KiB, with bf16 products (no LayerNorm) at chunk 64 88 KiB. Memora's kl retention
(every token reads its own softmax map, formed on chip per token and tile) fits them too, with
4 warps (tiled.num_warps): as named (channel-wise eta and alpha), tf32x3, K = 64, tile 32, its
backward needs 64 / 112 / 176 KiB at chunks 16 / 32 / 64 (with 8 warps 240 at chunk 64, over the
H100's 227; 232 with a tile of 16), fp32 products 40 / 56 at chunks 16 / 32. With W on chip
(channel.py) it needs at most 140 KiB (K = 32, hidden 128, chunk 32, fp32).
benchmarks/results/kernel_resources_mlp_tiled_sm90.md lists them."""

MLP_TILED_CHANNEL_MOMENTUM_CHUNK_K = {"bf16": 4096, "tf32x3": 2048, "fp32": 2048}
"""chunk x K limit of the hidden-tiled kernel with momentum and a channel-wise alpha, whose read
scores are summed step by step (kernels.channel_momentum), per tile for layer 2 and on chip for
layer 1. Measured with compile_check on sm_90 (Triton 3.9) at K = 64, hidden 256, tile 32, the
backward being the larger: Titans' axes with an alpha per channel, and Moneta's (lq) and Yaad's
gates with momentum, need 69 to 77 KiB at chunk 16 and 140 to 148 at chunk 32 with tf32x3
products, 90 to 144 KiB with fp32 ones (chunks 16, 32), but 384 to 392 KiB at chunk 64 (their
per-head gates: 176); bf16 products (no LayerNorm, e.g. lq, huber_norm, channel-wise eta and
alpha) need 140 KiB at chunk 64. benchmarks/results/kernel_resources_mlp_tiled_sm90.md lists
them."""


MAX_TOKEN_ELEMENTS = 2**31 - 1
"""Most elements of a [B, T, H, D] token tensor (q, k, v, the output and their gradients) the
kernels index: they address tokens with int32 offsets (the per-chunk stored states, which
grow faster, use int64 ones)."""
MAX_SEQUENCES = 65535
"""Most batch x head sequences: the matrix kernel launches them on a grid axis that CUDA caps
at 65535 programs."""


def token_tensor_problem(batch: int, length: int, heads: int, dim: int) -> str | None:
    """Why the kernels cannot take [batch, length, heads, dim] token tensors, or None."""
    elements = batch * length * heads * dim
    if elements > MAX_TOKEN_ELEMENTS:
        return (
            f"the kernels index token tensors with int32 offsets: [B, T, H, D] = [{batch}, {length}, "
            f"{heads}, {dim}] has {elements} elements, more than {MAX_TOKEN_ELEMENTS} (split the batch)"
        )
    if batch * heads > MAX_SEQUENCES:
        return (
            f"the kernels launch one program row per batch x head, at most {MAX_SEQUENCES}: "
            f"B x H = {batch} x {heads} (split the batch)"
        )
    return None


def triton_calibrated(version: str) -> bool:
    """Whether Triton ``version`` (e.g. '3.6.0') is one the limits were measured with or newer."""
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return major_minor >= CALIBRATED_TRITON


def _tile_size(n: int) -> bool:
    """A power of two of at least 16 (tl.dot's smallest tile): the MLP kernel pads no tile."""
    return n >= 16 and n & (n - 1) == 0


def matrix_shape_problem(key_dim: int, value_dim: int, products: str, row_norm: bool,
                         lq: bool = False, kl: bool = False) -> str | None:
    """Why the matrix-memory kernel cannot take these head dims with ``products`` ('bf16',
    'tf32x3' or 'fp32') and a row-norm bias or not, or None when it can. lq retention (``lq``)
    keeps the whole matrix in one program for its norm, as a row-norm bias does; kl retention's
    kernel (``kl``) takes head dims that are powers of two."""
    if kl and not all(dim >= MATRIX_MIN_DIM and dim & (dim - 1) == 0 for dim in (key_dim, value_dim)):
        return (f"kl retention's matrix kernel takes head dims that are powers of two, at least "
                f"{MATRIX_MIN_DIM}; got K={key_dim}, V={value_dim}")
    widest = MATRIX_MAX_DIM[products]["row_norm" if row_norm or lq else "tiled"]
    if min(key_dim, value_dim) >= MATRIX_MIN_DIM and max(key_dim, value_dim) <= widest:
        return None
    if lq and not row_norm:
        biases = "lq retention (the whole matrix on chip)"
    else:
        biases = "the row-norm biases (huber_norm, huber_switch, robust)" if row_norm else "this bias"
    return (
        f"the matrix-memory kernel takes K, V in {MATRIX_MIN_DIM}..{widest} with {biases} and "
        f"{products} products, got K={key_dim}, V={value_dim}"
    )


LQ_MOMENTUM_SHARE = 2
"""lq retention with momentum keeps more [chunk, hidden] tiles alive in the whole-W backward: at
its widest tf32x3 / fp32 shape (K 32, hidden 128, chunk 32) it needed 248 KiB of shared memory
(measured on CPU for sm_90, benchmarks/kernel_resources.py), over an H100's 227; half the chunk
needs 86 KiB. Its chunk x (K + hidden) limit is divided by this."""


def _whole_problem(key_dim: int, hidden: int, chunk_size: int, products: str,
                   lq_momentum: bool = False) -> str | None:
    """Why the MLP kernel that keeps W on chip cannot take this shape, or None (``lq_momentum``:
    lq retention with momentum, whose backward needs more)."""
    sizes = {"chunk x (K + hidden)": chunk_size * (key_dim + hidden), "K x hidden": key_dim * hidden,
             "chunk x chunk": chunk_size * chunk_size}
    for name, elements in sizes.items():
        limit = MLP_MAX_TILES[products][name]
        if lq_momentum and name == "chunk x (K + hidden)":
            limit //= LQ_MOMENTUM_SHARE
        if elements > limit:
            which = (" (momentum with lq retention or a channel-wise alpha)"
                     if limit < MLP_MAX_TILES[products][name] else "")
            return f"with W on chip its {name} tile ({elements} elements) exceeds {limit}{which}"
    return None


def _tiled_problem(key_dim: int, chunk_size: int, products: str, channel_momentum: bool = False) -> str | None:
    """Why the hidden-tiled MLP kernel cannot take this key dim and chunk, or None
    (``channel_momentum``: momentum with a channel-wise alpha)."""
    widest = MLP_TILED_MAX_CHUNK_K[products]
    which = ""
    if channel_momentum:
        widest = min(widest, MLP_TILED_CHANNEL_MOMENTUM_CHUNK_K[products])
        which = " (momentum with a channel-wise alpha)"
    if key_dim > MLP_TILED_MAX_K or chunk_size * key_dim > widest:
        return f"tiling the hidden dim takes K <= {MLP_TILED_MAX_K} and chunk x K <= {widest}{which}"
    return None


def mlp_hidden_tile(key_dim: int, hidden: int, chunk_size: int, products: str,
                    lq_momentum: bool = False) -> int | None:
    """The hidden tile of the MLP kernel for an admitted shape (mlp_shape_problem is None): None
    where W fits on chip whole (mlp_chunk/chunk.py, or channel.py with a channel-wise alpha),
    else the tile of mlp_chunk/tiled.py. ``lq_momentum``: momentum with lq retention or a
    channel-wise alpha (their share of the chip with W on chip, LQ_MOMENTUM_SHARE)."""
    if _whole_problem(key_dim, hidden, chunk_size, products, lq_momentum) is None:
        return None
    return min(MLP_HIDDEN_TILE, hidden)


def mlp_shape_problem(key_dim: int, hidden: int, chunk_size: int, products: str,
                      lq_momentum: bool = False, channel_momentum: bool = False) -> str | None:
    """Why the MLP-memory kernel cannot take this head dim K, hidden dim and chunk size with
    ``products`` ('bf16', 'tf32x3' or 'fp32'), or None when it can: with W on chip, or else with
    the hidden dim in tiles. ``lq_momentum``: momentum with lq retention; ``channel_momentum``:
    momentum with a channel-wise alpha (kl retention's always is), which takes lq with momentum's
    share of the chip with W on chip and MLP_TILED_CHANNEL_MOMENTUM_CHUNK_K in tiles."""
    if not (_tile_size(key_dim) and _tile_size(hidden)):
        return f"the MLP-memory kernel needs K and the hidden dim powers of two >= 16; got K={key_dim}, hidden={hidden}"
    whole = _whole_problem(key_dim, hidden, chunk_size, products, lq_momentum or channel_momentum)
    tiled = _tiled_problem(key_dim, chunk_size, products, channel_momentum)
    if whole is None or tiled is None:
        return None
    return (
        f"the MLP-memory kernel cannot take K={key_dim}, hidden={hidden}, chunk {chunk_size} with "
        f"{products} products: {whole}, and {tiled} (try a smaller chunk or head dim)"
    )
