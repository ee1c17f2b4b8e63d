"""Independent PyTorch implementations of the official attention modules, for the benchmarks.

Each class is written from the official code's maths and operation order (see
``../shared/docs/mechanisms.md``; no upstream code is copied) in NCHW with the official
state-dict keys, so ``keras_segattn.convert.load_reference_weights`` loads its
``state_dict()`` into our layer and the two compute the same function. They stand in for the
official modules in ``layer_benchmark.py``: same tensor layout (NCHW), same matmul operand
order, same in-place steps where the official code has them (e.g. ``energy /= ...``), plain
eager PyTorch.

| class | official module (repository @ commit, file) |
|---|---|
| ``PAMModule``, ``CAMModule`` | junfu1115/DANet @ b0a0fa00, ``encoding/nn/da_att.py`` |
| ``CrissCross`` | speedinghzl/CCNet @ 1fae6c67, ``cc_attention/functions.py`` (pure PyTorch) |
| ``NonLocal2d`` | open-mmlab/mmcv @ 0198abfd, ``mmcv/cnn/bricks/non_local.py`` |
| ``Efficient`` | cmsflash/efficient-attention @ 46a5f9ea, ``efficient_attention.py`` |
| ``PositionLinear``, ``ChannelLinear`` | lironui/Linear-Attention-Mechanism @ bcf97893 |
| ``ISABlock`` | openseg-group/openseg.pytorch @ aefc7551, ``lib/models/modules/isa_block.py`` |
| ``FullyAttentional`` | maggiesong7/FullyAttentional @ 52af4fdf, ``model.py`` |
"""

import torch
import torch.nn.functional as F
from torch import nn


class PAMModule(nn.Module):
    """DANet position attention: ``gamma * V softmax(Q^T K)^T + x`` with (B, C, N) bmm's."""

    def __init__(self, channels, reduction=8):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.key_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        query = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)  # (B, N, C')
        key = self.key_conv(x).view(b, -1, h * w)  # (B, C', N)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, N, N)
        value = self.value_conv(x).view(b, -1, h * w)  # (B, C, N)
        out = torch.bmm(value, attention.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x


class CAMModule(nn.Module):
    """DANet channel attention: ``softmax(max - X X^T) X`` with X as (B, C, N)."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.view(b, c, -1)
        energy = torch.bmm(flat, flat.permute(0, 2, 1))  # (B, C, C)
        energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = torch.softmax(energy_new, dim=-1)
        out = torch.bmm(attention, flat).view(b, c, h, w)
        return self.gamma * out + x


class CrissCross(nn.Module):
    """CCNet criss-cross attention, the batched-matmul formulation of the pure-PyTorch code:
    column energies on (B*W, H, C') x (B*W, C', H) with a -inf diagonal, row energies on
    (B*H, W, C') x (B*H, C', W), one softmax over H + W, two bmm aggregations."""

    def __init__(self, channels, reduction=8):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.key_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, _, h, w = x.shape
        query, key, value = self.query_conv(x), self.key_conv(x), self.value_conv(x)

        def columns(t):  # (B, C, H, W) -> (B*W, C, H)
            return t.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)

        def rows(t):  # (B, C, H, W) -> (B*H, C, W)
            return t.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)

        minus_inf_diagonal = -torch.diag(torch.full((h,), float("inf"))).unsqueeze(0)
        energy_h = torch.bmm(columns(query).permute(0, 2, 1), columns(key)) + minus_inf_diagonal
        energy_h = energy_h.view(b, w, h, h).permute(0, 2, 1, 3)  # (B, H, W, H')
        energy_w = torch.bmm(rows(query).permute(0, 2, 1), rows(key)).view(b, h, w, w)
        attention = torch.softmax(torch.cat([energy_h, energy_w], 3), dim=3)
        att_h = attention[:, :, :, :h].permute(0, 2, 1, 3).contiguous().view(b * w, h, h)
        att_w = attention[:, :, :, h:].contiguous().view(b * h, w, w)
        out_h = torch.bmm(columns(value), att_h.permute(0, 2, 1)).view(b, w, -1, h)
        out_w = torch.bmm(rows(value), att_w.permute(0, 2, 1)).view(b, h, -1, w)
        out = out_h.permute(0, 2, 3, 1) + out_w.permute(0, 2, 1, 3)
        return self.gamma * out + x


class RecurrentCrissCross(nn.Module):
    """``recurrence`` passes of one :class:`CrissCross` (shared weights), CCNet's RCCA core."""

    def __init__(self, channels, recurrence=2):
        super().__init__()
        self.cca = CrissCross(channels)
        self.recurrence = recurrence

    def forward(self, x):
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x


class _ConvModule(nn.Module):
    """mmcv ``ConvModule`` naming: ``conv`` (+ ``bn``)."""

    def __init__(self, in_channels, out_channels, bias=True, norm=False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None

    def forward(self, x):
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x


class NonLocal2d(nn.Module):
    """mmcv ``NonLocal2d`` embedded Gaussian with ``use_scale``: the N x N pairwise map is
    scaled in place and soft-maxed, ``z = x + BN(conv_out(y))``."""

    def __init__(self, channels, reduction=2):
        super().__init__()
        self.inter_channels = channels // reduction
        self.g = _ConvModule(channels, self.inter_channels)
        self.theta = _ConvModule(channels, self.inter_channels)
        self.phi = _ConvModule(channels, self.inter_channels)
        self.conv_out = _ConvModule(self.inter_channels, channels, bias=False, norm=True)

    def forward(self, x):
        n, _, h, w = x.shape
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)  # (B, N, C')
        theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter_channels, -1)  # (B, C', N)
        pairwise = torch.matmul(theta_x, phi_x)
        pairwise /= theta_x.shape[-1] ** 0.5
        pairwise = pairwise.softmax(dim=-1)
        y = torch.matmul(pairwise, g_x).permute(0, 2, 1).contiguous()
        y = y.reshape(n, self.inter_channels, h, w)
        return x + self.conv_out(y)


class Efficient(nn.Module):
    """Efficient attention (Shen et al.), per-head loop over contiguous channel slices."""

    def __init__(self, channels, key_channels, value_channels, head_count=1):
        super().__init__()
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.head_count = head_count
        self.keys = nn.Conv2d(channels, key_channels, 1)
        self.queries = nn.Conv2d(channels, key_channels, 1)
        self.values = nn.Conv2d(channels, value_channels, 1)
        self.reprojection = nn.Conv2d(value_channels, channels, 1)

    def forward(self, x):
        n, _, h, w = x.shape
        keys = self.keys(x).reshape(n, self.key_channels, h * w)
        queries = self.queries(x).reshape(n, self.key_channels, h * w)
        values = self.values(x).reshape(n, self.value_channels, h * w)
        hk = self.key_channels // self.head_count
        hv = self.value_channels // self.head_count
        heads = []
        for i in range(self.head_count):
            key = F.softmax(keys[:, i * hk:(i + 1) * hk, :], dim=2)
            query = F.softmax(queries[:, i * hk:(i + 1) * hk, :], dim=1)
            value = values[:, i * hv:(i + 1) * hv, :]
            context = key @ value.transpose(1, 2)  # (B, dk, dv)
            heads.append((context.transpose(1, 2) @ query).reshape(n, hv, h, w))
        return self.reprojection(torch.cat(heads, dim=1)) + x


def _l2_norm(x):
    """Divide by the L2 norm over dim -2 (channels of a (B, C, N) tensor)."""
    return torch.einsum("bcn,bn->bcn", x, 1 / torch.norm(x, p=2, dim=-2))


class PositionLinear(nn.Module):
    """LAM ``PositionLinearAttention``: first-order Taylor attention with einsums."""

    def __init__(self, channels, reduction=8, eps=1e-6):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.key_conv = nn.Conv2d(channels, channels // reduction, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, x):
        b, c, h, w = x.shape
        n = h * w
        query = _l2_norm(self.query_conv(x).view(b, -1, n)).permute(0, 2, 1)  # (B, N, m)
        key = _l2_norm(self.key_conv(x).view(b, -1, n))  # (B, m, N)
        value = self.value_conv(x).view(b, -1, n)  # (B, C, N)
        tailor_sum = 1 / (n + torch.einsum("bnm,bm->bn", query, torch.sum(key, dim=-1) + self.eps))
        value_sum = torch.einsum("bcn->bc", value).unsqueeze(-1).expand(-1, c, n)
        matrix = torch.einsum("bmn,bcn->bmc", key, value)
        matrix_sum = value_sum + torch.einsum("bnm,bmc->bcn", query, matrix)
        out = torch.einsum("bcn,bn->bcn", matrix_sum, tailor_sum).view(b, c, h, w)
        return x + self.gamma * out


class ChannelLinear(nn.Module):
    """LAM ``ChannelLinearAttention`` (the code's formula, see mechanisms.md section 4)."""

    def __init__(self, eps=1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, x):
        b, c, h, w = x.shape
        n = h * w
        flat = x.view(b, c, n)
        normed = _l2_norm(flat)  # (B, C, N), each position vector of unit norm
        normed_t = normed.permute(0, 2, 1)  # (B, N, C)
        tailor_sum = 1 / (n + torch.einsum("bnc,bn->bc", normed_t, torch.sum(normed, dim=-2) + self.eps))
        value_sum = torch.einsum("bcn->bn", flat).unsqueeze(1).expand(-1, c, n)
        matrix = torch.einsum("bcn,bnd->bcd", flat, normed_t)  # (B, C, C)
        matrix_sum = value_sum + torch.bmm(matrix, normed)  # (B, C, N)
        out = torch.einsum("bcn,bc->bcn", matrix_sum, tailor_sum).view(b, c, h, w)
        return x + self.gamma * out


def _bn_relu(channels):
    # State-dict key "<i>.0.*": a Sequential(BatchNorm2d, ReLU) at position i.
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


class SelfAttentionBlock2D(nn.Module):
    """openseg ``SelfAttentionBlock2D``: ``W(softmax(d^-0.5 q k^T) v)``, no residual."""

    def __init__(self, in_channels, key_channels, value_channels, out_channels):
        super().__init__()
        self.key_channels = key_channels
        self.value_channels = value_channels

        def embed():
            return nn.Sequential(
                nn.Conv2d(in_channels, key_channels, 1, bias=False), _bn_relu(key_channels),
                nn.Conv2d(key_channels, key_channels, 1, bias=False), _bn_relu(key_channels),
            )

        self.f_key = embed()
        self.f_query = embed()
        self.f_value = nn.Conv2d(in_channels, value_channels, 1, bias=False)
        self.W = nn.Sequential(nn.Conv2d(value_channels, out_channels, 1, bias=False),
                               _bn_relu(out_channels))

    def forward(self, x):
        b, _, h, w = x.shape
        value = self.f_value(x).view(b, self.value_channels, -1).permute(0, 2, 1)
        query = self.f_query(x).view(b, self.key_channels, -1).permute(0, 2, 1)
        key = self.f_key(x).view(b, self.key_channels, -1)
        sim = torch.matmul(query, key) * self.key_channels ** -0.5
        sim = F.softmax(sim, dim=-1)
        context = torch.matmul(sim, value).permute(0, 2, 1).contiguous()
        return self.W(context.view(b, self.value_channels, h, w))


class ISABlock(nn.Module):
    """openseg ``ISA_Block``: pad, long-range groups, short-range groups, crop."""

    def __init__(self, in_channels, key_channels, value_channels, out_channels, down_factor=(8, 8)):
        super().__init__()
        self.down_factor = down_factor
        self.long_range_sa = SelfAttentionBlock2D(in_channels, key_channels, value_channels,
                                                  out_channels)
        self.short_range_sa = SelfAttentionBlock2D(out_channels, key_channels, value_channels,
                                                   out_channels)

    def forward(self, x):
        b, c, h, w = x.shape
        ph, pw = self.down_factor
        qh, qw = -(-h // ph), -(-w // pw)
        pad_h, pad_w = qh * ph - h, qw * pw - w
        if pad_h > 0 or pad_w > 0:
            padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            feats = F.pad(x, padding)
        else:
            feats = x
        # long range: (B, C, Qh, Ph, Qw, Pw) -> (B, Ph, Pw, C, Qh, Qw)
        feats = feats.view(b, c, qh, ph, qw, pw).permute(0, 3, 5, 1, 2, 4).contiguous()
        feats = self.long_range_sa(feats.view(-1, c, qh, qw))
        c = feats.shape[1]
        # short range: (B, Ph, Pw, C, Qh, Qw) -> (B, Qh, Qw, C, Ph, Pw)
        feats = feats.view(b, ph, pw, c, qh, qw).permute(0, 4, 5, 3, 1, 2).contiguous()
        feats = self.short_range_sa(feats.view(-1, c, ph, pw))
        feats = feats.view(b, qh, qw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).contiguous()
        feats = feats.view(b, c, qh * ph, qw * pw)
        if pad_h > 0 or pad_w > 0:
            feats = feats[:, :, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
        return feats


class FullyAttentional(nn.Module):
    """FLANet ``FullyAttentionalBlock``, with every sample paired with its own row/column
    descriptors (``repeat_interleave``; the official ``repeat`` differs only for batch > 1,
    at the same cost)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Linear(channels, channels)
        self.conv2 = nn.Linear(channels, channels)
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        feat_h = x.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)  # (B*W, C, H)
        feat_w = x.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)  # (B*H, C, W)
        encode_h = self.conv1(F.avg_pool2d(x, [1, w]).view(b, -1, h).permute(0, 2, 1))  # (B, H, C)
        encode_w = self.conv2(F.avg_pool2d(x, [h, 1]).view(b, -1, w).permute(0, 2, 1))  # (B, W, C)
        energy_h = torch.bmm(feat_h, encode_h.repeat_interleave(w, dim=0))  # (B*W, C, C)
        energy_w = torch.bmm(feat_w, encode_w.repeat_interleave(h, dim=0))  # (B*H, C, C)
        relation_h = torch.softmax(energy_h, dim=-1)
        relation_w = torch.softmax(energy_w, dim=-1)
        aug_h = torch.bmm(relation_h, feat_h).view(b, w, -1, h).permute(0, 2, 3, 1)
        aug_w = torch.bmm(relation_w, feat_w).view(b, h, -1, w).permute(0, 2, 1, 3)
        return self.conv(self.gamma * (aug_h + aug_w) + x)


def randomize(module, seed=0, gamma=0.5):
    """Deterministic non-trivial parameters: conv/linear weights ~ N(0, 1/fan_in), biases and
    BN affine/statistics random, every zero-initialised ``gamma`` set to ``gamma``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("gamma"):
                tensor.fill_(gamma)
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.ndim >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
                if name.endswith("weight"):  # BN scale around 1
                    tensor.add_(1.0)
    return module
