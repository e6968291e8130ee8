"""FLASH: the module is one MixedChunkAttention call gated by U (the op's own tests are in
tests/ops/mixed_chunk_attention/).

Tolerance 1e-10: the module runs in float64 and only summation order differs from the reference.
"""

import torch

from attnx.models.flash import FLASH
from attnx.ops import mixed_chunk_attention as mc


def test_flash_module_is_one_op_call_with_u_gating(rng):
    torch.manual_seed(0)
    m = FLASH(16, qk_dim=8, causal=True, chunk_size=4).double().eval()
    x = torch.randn(2, 9, 16, generator=rng, dtype=torch.float64)
    u, v = torch.nn.functional.silu(m.uv(x)).chunk(2, -1)
    z = torch.nn.functional.silu(m.z(x))
    parts = [(z * m.qk.gamma[h] + m.qk.beta[h]).unsqueeze(1) for h in range(4)]
    y = mc.reference(*parts, v.unsqueeze(1), **m.attrs)[0].squeeze(1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.out(u * y), rtol=1e-10, atol=1e-10)
