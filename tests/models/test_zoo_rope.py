"""RoPE and the tiny ViT: rotations against the pair-by-pair definition, relative-position
invariance, 2-D angles, sinusoidal positions, the export as RotaryEmbedding (opset 23) and as
standard ops (opset 18), the ViT's attention against its dense reference.

Tolerances: float64 paths 1e-10 (a rotation is exact up to rounding of cos/sin); the
relative-position check 1e-9 (dot products of rotated vectors of norm ~3).
"""

import copy
import math

import onnx
import pytest
import torch

from attnx.check import check_parity
from attnx.errors import AttributeValueError, InputError
from attnx.models.rope import (Rotary, grid_positions, reference_rotate, rope_2d_angles, rope_angles, rotate,
                               sinusoidal_positions)
from attnx.models.vit import patch_grid, reference


def test_rotation_matches_the_pair_by_pair_definition(rng):
    x = torch.randn(2, 3, 7, 8, generator=rng, dtype=torch.float64)
    angles = rope_angles(torch.arange(7, dtype=torch.float64), 8)
    y = rotate(x, angles)
    for p in range(7):
        for t in range(4):
            a = p * 10000 ** (-2 * t / 8)
            even, odd = x[..., p, 2 * t], x[..., p, 2 * t + 1]
            torch.testing.assert_close(y[..., p, 2 * t], even * math.cos(a) - odd * math.sin(a), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(y[..., p, 2 * t + 1], even * math.sin(a) + odd * math.cos(a),
                                       rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, reference_rotate(x, angles), rtol=1e-12, atol=1e-12)


def test_rotated_dot_products_depend_on_the_offset_only(rng):
    q, k = torch.randn(16, generator=rng, dtype=torch.float64), torch.randn(16, generator=rng, dtype=torch.float64)
    rope = Rotary(16)

    def score(i, j):
        qs = q.expand(1, 1, 30, 16).clone()
        rq, rk = rope(qs, k.expand(1, 1, 30, 16).clone())
        return float(rq[0, 0, i] @ rk[0, 0, j])

    assert score(9, 4) == pytest.approx(score(25, 20), abs=1e-9)
    assert abs(score(9, 4) - score(9, 5)) > 1e-3


def test_2d_angles_turn_first_half_by_row_second_by_col():
    rows, cols = grid_positions(3, 4, dtype=torch.float64)
    assert rows.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and cols.tolist() == [0, 1, 2, 3] * 3
    angles = rope_2d_angles(rows, cols, 8)
    torch.testing.assert_close(angles[:, :2], rope_angles(rows, 4))
    torch.testing.assert_close(angles[:, 2:], rope_angles(cols, 4))


def test_sinusoidal_positions_follow_the_formula():
    p = sinusoidal_positions(5, 6, dtype=torch.float64)
    for k in range(5):
        for t in range(3):
            assert p[k, 2 * t] == pytest.approx(math.sin(k / 10000 ** (2 * t / 6)))
            assert p[k, 2 * t + 1] == pytest.approx(math.cos(k / 10000 ** (2 * t / 6)))


def test_rotary_settings_say_what_is_wrong():
    with pytest.raises(AttributeValueError, match="head_dim must be a multiple of 4"):
        Rotary(6, two_d=True)
    with pytest.raises(InputError, match=r"needs the patch grid \(rows, cols\)"):
        Rotary(8, two_d=True)(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8))


def test_vit_attention_matches_dense_reference(exported, rng):
    loaded, _ = exported("vit-rope2d-tiny", opset=23)
    vit = loaded.module
    attention = vit.blocks[0].attention
    attention = copy.deepcopy(attention).double()
    grid = (3, 5)
    x = torch.randn(2, 15, 64, generator=rng, dtype=torch.float64)
    q, k, v = attention.qkv(x).unflatten(-1, (3, 4, 16)).permute(2, 0, 3, 1, 4)
    phi = torch.nn.functional.elu
    angles = rope_2d_angles(*grid_positions(*grid, dtype=torch.float64), 16)
    rq, rk = reference_rotate(phi(q) + 1, angles), reference_rotate(phi(k) + 1, angles)
    y = reference(q, k, v, rq, rk)
    with torch.no_grad():
        torch.testing.assert_close(attention(x, grid), attention.out(y.transpose(1, 2).flatten(2)),
                                   rtol=1e-10, atol=1e-10)


def test_patch_grid_holds_about_n_patches():
    assert [patch_grid(n) for n in (1, 37, 300, 1024)] == [(1, 1), (6, 7), (17, 18), (32, 32)]


@pytest.mark.parametrize("opset, rotary_nodes", [(23, 4), (18, 0)])
def test_vit_exports_rope_as_rotary_embedding_at_23_and_standard_ops_at_18(opset, rotary_nodes, exported):
    loaded, path = exported("vit-rope2d-tiny", opset=opset)
    model = onnx.load(path)
    assert sum(n.op_type == "RotaryEmbedding" for n in model.graph.node) == rotary_nodes
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", "", "height", "width"]
    report = check_parity(path, loaded, seq_lens=(1, 37, 300, 1024))
    assert report.passed, report.to_text()
    assert [o.shape for o in report.outputs] == [[2, 10]] * 4
