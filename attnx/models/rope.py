"""Positions: RoPE (1-D, and 2-D for image patches) and sinusoidal absolute embeddings (VARIANTS.md).

RoPE rotates each pair (2t, 2t+1) of a head vector by an angle: p·θ_t with θ_t =
base^(−2t/D) for a token at position p; for an image patch at (row, col) the first D/4 pairs
turn by row and the last D/4 by col, each half with the frequencies of a D/2-dim 1-D RoPE.
Both are one rotation with per-token angles [N, D/2], the custom op `attnx::rotary_embedding`,
which exports as ONNX `RotaryEmbedding` (interleaved) at opset 23 and as standard ops below.
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.errors import AttributeValueError, InputError

BASE = 10000.0


def rope_angles(positions: torch.Tensor, dim: int, base: float = BASE) -> torch.Tensor:
    """positions [N] → angles [N, dim/2], pair t turning by p·base^(−2t/dim)."""
    theta = base ** (-torch.arange(0, dim, 2, dtype=positions.dtype, device=positions.device) / dim)
    return positions.unsqueeze(-1) * theta


def rope_2d_angles(rows: torch.Tensor, cols: torch.Tensor, dim: int, base: float = BASE) -> torch.Tensor:
    """rows, cols [N] → angles [N, dim/2]: the first dim/4 pairs by row, the last dim/4 by col."""
    return torch.cat([rope_angles(rows, dim // 2, base), rope_angles(cols, dim // 2, base)], -1)


def grid_positions(height: int, width: int, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column [N = height·width] of each patch, row-major."""
    # expand rather than repeat_interleave, whose ONNX translation breaks on dynamic sizes
    rows = torch.arange(height, dtype=dtype, device=device)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=dtype, device=device)[None, :].expand(height, width)
    return rows.reshape(-1), cols.reshape(-1)


@torch.library.custom_op("attnx::rotary_embedding", mutates_args=())
def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, N, D], cos/sin [B, N, D/2] → x with pair (2t, 2t+1) turned by the angle of cos/sin[..., t].

    A custom op so that export controls its translation (`attnx.exporters.rotary`): ONNX
    `RotaryEmbedding` at opset 23, standard ops below.
    """
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


@rotary_embedding.register_fake
def _rotary_embedding_fake(x, cos, sin):
    return torch.empty_like(x)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x [B, H, N, D] rotated pairwise by angles [N, D/2]."""
    angles = angles.expand(x.shape[0], *angles.shape)
    return rotary_embedding(x, angles.cos().to(x.dtype), angles.sin().to(x.dtype))


def reference_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Float64 definition: (x_2t, x_2t+1) ↦ (x_2t cos − x_2t+1 sin, x_2t sin + x_2t+1 cos)."""
    x, angles = x.double(), angles.double()
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    if cos.dim() == 3:  # [B, N, D/2] → [B, 1, N, D/2]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


def sinusoidal_positions(n: int, dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[N, dim]: p_{k,2t} = sin(k / 10000^(2t/dim)), p_{k,2t+1} = cos(k / 10000^(2t/dim))."""
    angles = rope_angles(torch.arange(n, dtype=dtype, device=device), dim)
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(-2)


class Rotary(nn.Module):
    """Rotates q and k [B, H, N, D]: by positions 0..N−1, or (`two_d`) by the patch grid given."""

    min_opset = 23  # ONNX RotaryEmbedding

    def __init__(self, head_dim: int, *, two_d: bool = False, base: float = BASE):
        super().__init__()
        if head_dim % (4 if two_d else 2):
            raise AttributeValueError(f"Rotary: head_dim must be a multiple of {4 if two_d else 2} (pairs"
                                      f"{', split in two halves' if two_d else ''}), got {head_dim}")
        self.head_dim, self.two_d, self.base = head_dim, two_d, base

    def angles(self, n: int, grid: tuple[int, int] | None, dtype, device) -> torch.Tensor:
        """[N, D/2]; `grid` (rows, cols) of the patches when two_d."""
        if not self.two_d:
            return rope_angles(torch.arange(n, dtype=dtype, device=device), self.head_dim, self.base)
        if grid is None:
            raise InputError("Rotary(two_d=True) needs the patch grid (rows, cols)")
        return rope_2d_angles(*grid_positions(*grid, dtype=dtype, device=device), self.head_dim, self.base)

    def forward(self, q, k, grid: tuple[int, int] | None = None):
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        angles = self.angles(q.shape[2], grid, dtype, q.device)
        return rotate(q, angles), rotate(k, angles)
