"""Prefill and decode: a causal language model as two graphs that together are the full model.

Prefill takes a prompt and returns logits and every layer's state; decode takes one token and
the states and returns its logits and the next states. States are named `past.<layer>.<name>`
going in and `present.<layer>.<name>` coming out; each attention module says what its state is
(`state_names`, `state_axes`) and provides `prefill(x)` and `decode(x, state)`; a module whose
settings rule out a token-by-token form says why in `why_not_streamable`.
"""

from __future__ import annotations

import torch
from torch import nn

from attnx.errors import ModelNotFoundError
from attnx.models.tiny_lm import TinyLM
from attnx.models.zoo import LoadedModel


def streamable(loaded: LoadedModel) -> TinyLM:
    """The model's TinyLM if every block's attention can stream, else a clear error."""
    lm = loaded.module
    if not isinstance(lm, TinyLM):
        raise ModelNotFoundError(f"{loaded.name}: streaming needs a zoo language model (TinyLM), got "
                                 f"{type(lm).__name__}")
    for i, block in enumerate(lm.blocks):
        attention = block.attention
        if not (hasattr(attention, "decode") and attention.causal):
            raise ModelNotFoundError(f"{loaded.name}: block {i}'s {type(attention).__name__} has no "
                                     "token-by-token form (it must be causal and provide prefill/decode)")
        reason = getattr(attention, "why_not_streamable", None)
        if reason:
            raise ModelNotFoundError(f"{loaded.name}: block {i}'s {type(attention).__name__} cannot stream: {reason}")
    return lm


def _block_step(block, x, attend):
    h, state = attend(block.attention, block.norm1(x))
    x = x + h
    return x + block.mlp(block.norm2(x)), state


class Prefill(nn.Module):
    """input_ids [B, P] → (logits [B, P, V], *states, layer by layer)."""

    def __init__(self, lm: TinyLM):
        super().__init__()
        self.lm = lm

    @property
    def wrapped(self) -> TinyLM:
        """The model this graph is part of: its file records that model's fingerprint."""
        return self.lm

    def forward(self, input_ids):
        x, states = self.lm.embed(input_ids), []
        for block in self.lm.blocks:
            x, state = _block_step(block, x, lambda attn, h: attn.prefill(h))
            states.extend(state)
        return (self.lm.head(self.lm.norm(x)), *states)


class Decode(nn.Module):
    """(input_ids [B, 1], *states) → (logits [B, 1, V], *next states)."""

    def __init__(self, lm: TinyLM):
        super().__init__()
        self.lm = lm
        self.per_layer = [len(b.attention.state_names) for b in lm.blocks]

    @property
    def wrapped(self) -> TinyLM:
        """The model this graph is part of: its file records that model's fingerprint."""
        return self.lm

    def forward(self, input_ids, *states):
        x, out, at = self.lm.embed(input_ids), [], 0
        for block, count in zip(self.lm.blocks, self.per_layer):
            layer_state = states[at:at + count]
            at += count
            x, state = _block_step(block, x, lambda attn, h: attn.decode(h, layer_state))
            out.extend(state)
        return (self.lm.head(self.lm.norm(x)), *out)


def state_names(lm: TinyLM, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{name}" for i, b in enumerate(lm.blocks) for name in b.attention.state_names]


def state_axes(lm: TinyLM) -> list[dict[int, str]]:
    return [axes for b in lm.blocks for axes in b.attention.state_axes]


def prefill_model(loaded: LoadedModel) -> LoadedModel:
    lm = streamable(loaded)
    return LoadedModel(loaded.name, Prefill(lm), loaded.example_inputs,
                       ["logits", *state_names(lm, "present")], ({0: "batch", 1: "seq"},), ["input_ids"])


def decode_model(loaded: LoadedModel) -> LoadedModel:
    """Example inputs: the last example token after a prefill of the ones before it."""
    lm = streamable(loaded)
    ids = loaded.example_inputs[0]
    with torch.no_grad():
        states = Prefill(lm)(ids[:, :-1])[1:]
    return LoadedModel(loaded.name, Decode(lm), (ids[:, -1:], *states),
                       ["logits", *state_names(lm, "present")], ({0: "batch"}, *state_axes(lm)),
                       ["input_ids", *state_names(lm, "past")])
