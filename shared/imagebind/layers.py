"""The transformer that every ImageBind modality shares, under the reference's parameter names.

Parameter names and shapes equal those of Meta's ``SimpleTransformer`` built from
``nn.MultiheadAttention`` (``attn.in_proj_weight``, ``attn.bias_k``, ``attn.out_proj.weight``,
``norm_1``, ``mlp.fc1``...), so the official checkpoint loads as is. The arithmetic is the
same; only the attention runs through `F.scaled_dot_product_attention` in batch-first layout
instead of ``nn.MultiheadAttention``'s sequence-first one (attention is per item, so the layout
does not change results).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.imagebind.config import TrunkConfig

# Every LayerNorm inside the trunks and heads uses 1e-6; only the audio stem's uses torch's 1e-5.
BLOCK_LN_EPS = 1e-6


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters.

    `add_bias_kv` appends one learned key and value token after the in-projection (as
    ``nn.MultiheadAttention`` does: they are not projected); `causal` masks future tokens.
    The two are never combined in ImageBind, and SDPA's `is_causal` would not cover the extra
    key, so the constructor refuses the combination.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, add_bias_kv: bool, causal: bool) -> None:
        super().__init__()
        if add_bias_kv and causal:
            raise ValueError("add_bias_kv with a causal mask is not supported")
        self.num_heads = num_heads
        self.causal = causal
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.bias_k: nn.Parameter | None = None
        self.bias_v: nn.Parameter | None = None
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        batch, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3D)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, L, D)
        if self.bias_k is not None and self.bias_v is not None:
            # Under autocast k/v are bf16 while the bias tokens stay in their stored dtype.
            k = torch.cat([k, self.bias_k.to(k.dtype).expand(batch, 1, dim)], dim=1)  # (B, L+1, D)
            v = torch.cat([v, self.bias_v.to(v.dtype).expand(batch, 1, dim)], dim=1)  # (B, L+1, D)
        q = q.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, L, hd)
        k = k.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, L or L+1, hd)
        v = v.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, L or L+1, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, L, hd)
        out = out.transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        return self.out_proj(out)  # type: ignore[no-any-return]


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2, hidden width 4x."""

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # type: ignore[no-any-return]


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm_1(x)), then x + mlp(norm_2(x))."""

    def __init__(self, embed_dim: int, num_heads: int, *, add_bias_kv: bool, causal: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(embed_dim, num_heads, add_bias_kv=add_bias_kv, causal=causal)
        self.norm_1 = nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(embed_dim, 4 * embed_dim)
        self.norm_2 = nn.LayerNorm(embed_dim, eps=BLOCK_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """A modality's transformer: optional pre-LayerNorm, then `num_blocks` blocks.

    ``pre_transformer_layer`` is a Sequential so its LayerNorm keeps the reference key
    ``pre_transformer_layer.0.*`` (index 1 there was a layout change we do not need).
    """

    def __init__(self, config: TrunkConfig, *, pre_norm: bool, add_bias_kv: bool, causal: bool) -> None:
        super().__init__()
        first: nn.Module = nn.LayerNorm(config.embed_dim, eps=BLOCK_LN_EPS) if pre_norm else nn.Identity()
        self.pre_transformer_layer = nn.Sequential(first)
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, add_bias_kv=add_bias_kv, causal=causal)
            for _ in range(config.num_blocks)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x)
        return x  # type: ignore[no-any-return]
