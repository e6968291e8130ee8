"""fuse-linear-attention on look-alikes of linear attention in linear form: each is left alone and the
report names the check that refused it and what that check found."""

import pytest
import torch

from attnx.surgeon import optimize_model
from helpers.attention_models import elu1
from helpers.graphs import EXPORT_LEN, QKV, QKV_AXES, export

QKR = [(2, EXPORT_LEN, 8), (2, EXPORT_LEN, 4, 8), (2, EXPORT_LEN, 4, 8)]  # q [B, N, D], k and v [B, N, R, D]
QKR_AXES = (1, 1, 1)


class GridKeysLinearAttention(torch.nn.Module):
    """Keys on a 2-D grid [B, R, C, D]: K·V sums over two axes, which LinearAttention does not take."""

    def forward(self, q, k, v):
        kv = torch.einsum("brcd,brce->bde", elu1(k), v)
        return torch.einsum("bnd,bde->bne", elu1(q), kv)


class SlotsCausalLinearAttention(torch.nn.Module):
    """R key slots per position [B, N, R, D]: the state K·V sums over the slots before its CumSum."""

    def forward(self, q, k, v):
        s = torch.einsum("bnrd,bnre->bnde", elu1(k), v).cumsum(1)
        return torch.einsum("bnd,bnde->bne", elu1(q), s)


class FullSumNormalisedCausalAttention(torch.nn.Module):
    """A causal prefix state divided by q·Σk over every key: the normaliser is not the state's."""

    def forward(self, q, k, v):
        q, k = elu1(q), elu1(k)
        s = torch.einsum("bhnd,bhne->bhnde", k, v).cumsum(2)
        y = torch.einsum("bhnd,bhnde->bhne", q, s)
        return y / (torch.einsum("bhnd,bhd->bhn", q, k.sum(2)).unsqueeze(-1) + 1e-6)


class LargeEpsLinearAttention(torch.nn.Module):
    """Q(KᵀV) / (q·Σk + 2): the normaliser matches, but LinearAttention's eps lies in (0, 1]."""

    def forward(self, q, k, v):
        q, k = elu1(q), elu1(k)
        y = torch.einsum("bhnd,bhde->bhne", q, torch.einsum("bhmd,bhme->bhde", k, v))
        return y / (torch.einsum("bhnd,bhd->bhn", q, k.sum(2)).unsqueeze(-1) + 2.0)


def ops(model):
    return sorted(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node)


@pytest.mark.parametrize("module, shapes, axes, check, found", [
    (GridKeysLinearAttention(), QKR, QKR_AXES, "kv_contracts_keys", "K·V sums over 2 axes of k (axes 1, 2 of"),
    (SlotsCausalLinearAttention(), QKR, QKR_AXES, "kv_contracts_keys", "also sums over axis 2 of k"),
    (FullSumNormalisedCausalAttention(), QKV, QKV_AXES, "normaliser_matches",
     "z is a ReduceSum of k where the state is a CumSum over the tokens"),
    (LargeEpsLinearAttention(), QKV, QKV_AXES, "normaliser_matches", "the graph adds 2"),
])
def test_look_alikes_are_left_alone_and_the_report_says_what_it_found(module, shapes, axes, check, found):
    model = export(module, shapes, axes)
    out, reports = optimize_model(model, "ort", ["fuse-linear-attention"])
    (report,) = reports
    assert (report.matched, report.rewritten) == (1, 0), report.details
    (detail,) = report.details
    assert detail["checks"][check] is False, detail
    assert detail["why"].startswith(f"{check}: ") and found in detail["why"], detail
    assert ops(out) == ops(model)
