"""Small, independent PyTorch re-implementations of mmsegmentation modules for the tests.

Written from open-mmlab/mmsegmentation ``mmseg/models/backbones/resnet.py`` (``ResNetV1c``,
``BasicBlock``, ``Bottleneck``), ``mmseg/models/utils/res_layer.py`` (``ResLayer``:
``contract_dilation``, ``multi_grid``), ``mmseg/models/decode_heads/{decode_head,fcn_head,
da_head,nl_head,cc_head,isa_head}.py``, ``mmseg/models/utils/self_attention_block.py`` and mmcv's
``ConvModule`` / ``Scale`` / ``NonLocal2d`` / ``CrissCrossAttention``, with the same module
structure, so ``state_dict()`` has mmseg's keys (prefix them with ``backbone.``,
``decode_head.``, ``auxiliary_head.`` for a whole ``EncoderDecoder``). NCHW, eval mode.
Only what the tests need: no plugins, DCN, ``avg_down``, ``norm_eval`` or losses.

Imported by the tests only after ``pytest.importorskip("torch")``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# mmcv bricks
# ---------------------------------------------------------------------------------------------


class ConvModule(nn.Module):
    """mmcv ``ConvModule``: ``conv`` (bias only without norm) -> ``bn`` -> ReLU (``activate``)."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, norm=True, act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                              bias=not norm)
        self.with_norm = norm
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU() if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class Scale(nn.Module):
    """mmcv ``Scale``: a learnable scalar ``scale`` (0-d parameter)."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x):
        return x * self.scale


# ---------------------------------------------------------------------------------------------
# ResNetV1c
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)  # never dilated
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """style='pytorch': the stride is on conv2 (3x3)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def res_layer(block, inplanes, planes, num_blocks, stride, dilation, multi_grid=None,
              contract_dilation=False):
    """mmseg ``ResLayer`` (no avg_down)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    if multi_grid is None:
        first = dilation // 2 if (dilation > 1 and contract_dilation) else dilation
    else:
        first = multi_grid[0]
    layers = [block(inplanes, planes, stride, first, downsample)]
    for i in range(1, num_blocks):
        layers.append(block(planes * block.expansion, planes, 1,
                            dilation if multi_grid is None else multi_grid[i]))
    return nn.Sequential(*layers)


class ResNetV1c(nn.Module):
    """mmseg ``ResNetV1c`` (deep_stem=True, avg_down=False, style='pytorch').

    ``block``: ``"block"`` (Bottleneck) or ``"basic_block"``; ``stage_blocks`` per stage;
    ``strides``/``dilations`` as in mmseg configs (d8: (1, 2, 1, 1) / (1, 1, 2, 4)).
    Returns the four stage outputs.
    """

    def __init__(self, block="block", stage_blocks=(3, 4, 6, 3), base_channels=64,
                 stem_channels=64, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                 contract_dilation=True, multi_grid=None):
        super().__init__()
        block = Bottleneck if block == "block" else BasicBlock
        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU(),
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem_channels
        self.res_layers = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            layer = res_layer(
                block, inplanes, planes, num_blocks, strides[i], dilations[i],
                multi_grid=multi_grid if i == len(stage_blocks) - 1 else None,
                contract_dilation=contract_dilation,
            )
            inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", layer)
            self.res_layers.append(f"layer{i + 1}")

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for name in self.res_layers:
            x = getattr(self, name)(x)
            outs.append(x)
        return tuple(outs)


def d8_config(output_stride):
    """mmseg ``strides``/``dilations`` of the ``-d8`` / ``-d16`` / plain configs."""
    return {
        8: dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)),
        16: dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
        32: dict(strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1)),
    }[output_stride]


# ---------------------------------------------------------------------------------------------
# Decode heads
# ---------------------------------------------------------------------------------------------


class FCNHead(nn.Module):
    """mmseg ``FCNHead`` (``BaseDecodeHead``: ``dropout`` + ``conv_seg``)."""

    def __init__(self, in_channels, channels, num_classes, num_convs=2, concat_input=True):
        super().__init__()
        self.concat_input = concat_input
        convs = [ConvModule(in_channels, channels, 3, padding=1)]
        convs += [ConvModule(channels, channels, 3, padding=1) for _ in range(num_convs - 1)]
        self.convs = nn.Sequential(*convs)
        if concat_input:
            self.conv_cat = ConvModule(in_channels + channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def cls_seg(self, x):
        return self.conv_seg(self.dropout(x))

    def forward(self, x):
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.cls_seg(out)


class PAM(nn.Module):
    """mmseg ``PAM`` = ``SelfAttentionBlock`` with plain 1x1 projections (bias), no
    ``matmul_norm``, no out projection; ``gamma = Scale(0)``."""

    def __init__(self, in_channels, channels):
        super().__init__()
        self.key_project = nn.Conv2d(in_channels, channels, 1)
        self.query_project = nn.Conv2d(in_channels, channels, 1)
        self.value_project = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = Scale(0.0)

    def forward(self, x):
        b, c, h, w = x.shape
        query = self.query_project(x).reshape(b, -1, h * w).permute(0, 2, 1)
        key = self.key_project(x).reshape(b, -1, h * w)
        value = self.value_project(x).reshape(b, c, h * w).permute(0, 2, 1)
        sim = F.softmax(torch.matmul(query, key), dim=-1)
        context = torch.matmul(sim, value).permute(0, 2, 1).reshape(b, c, h, w)
        return self.gamma(context) + x


class CAM(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = Scale(0.0)

    def forward(self, x):
        b, c, h, w = x.shape
        query = x.view(b, c, -1)
        energy = torch.bmm(query, query.permute(0, 2, 1))
        energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = F.softmax(energy_new, dim=-1)
        out = torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w)
        return self.gamma(out) + x


class DAHead(nn.Module):
    """mmseg ``DAHead``: returns ``(pam_cam_out, pam_out, cam_out)``."""

    def __init__(self, in_channels, channels, pam_channels, num_classes):
        super().__init__()
        self.pam_in_conv = ConvModule(in_channels, channels, 3, padding=1)
        self.pam = PAM(channels, pam_channels)
        self.pam_out_conv = ConvModule(channels, channels, 3, padding=1)
        self.pam_conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.cam_in_conv = ConvModule(in_channels, channels, 3, padding=1)
        self.cam = CAM()
        self.cam_out_conv = ConvModule(channels, channels, 3, padding=1)
        self.cam_conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        pam_feat = self.pam_out_conv(self.pam(self.pam_in_conv(x)))
        cam_feat = self.cam_out_conv(self.cam(self.cam_in_conv(x)))
        pam_out = self.pam_conv_seg(self.dropout(pam_feat))
        cam_out = self.cam_conv_seg(self.dropout(cam_feat))
        return self.conv_seg(self.dropout(pam_feat + cam_feat)), pam_out, cam_out


class NonLocal2d(nn.Module):
    """mmcv ``NonLocal2d`` (embedded Gaussian, ``use_scale``, BN in ``conv_out``)."""

    def __init__(self, in_channels, reduction=2):
        super().__init__()
        self.inter_channels = in_channels // reduction
        self.g = ConvModule(in_channels, self.inter_channels, 1, norm=False, act=False)
        self.conv_out = ConvModule(self.inter_channels, in_channels, 1, act=False)
        self.theta = ConvModule(in_channels, self.inter_channels, 1, norm=False, act=False)
        self.phi = ConvModule(in_channels, self.inter_channels, 1, norm=False, act=False)

    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter_channels, -1)
        pairwise = torch.matmul(theta_x, phi_x) / theta_x.shape[-1] ** 0.5
        y = torch.matmul(pairwise.softmax(dim=-1), g_x)
        y = y.permute(0, 2, 1).reshape(n, self.inter_channels, *x.shape[2:])
        return x + self.conv_out(y)


class NLHead(FCNHead):
    def __init__(self, in_channels, channels, num_classes, reduction=2):
        super().__init__(in_channels, channels, num_classes, num_convs=2)
        self.nl_block = NonLocal2d(channels, reduction)

    def forward(self, x):
        out = self.convs[1](self.nl_block(self.convs[0](x)))
        return self.cls_seg(self.conv_cat(torch.cat([x, out], dim=1)))


class CrissCrossAttention(nn.Module):
    """mmcv ``CrissCrossAttention`` (pure PyTorch version)."""

    def __init__(self, in_channels):
        super().__init__()
        self.query_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.key_conv = nn.Conv2d(in_channels, in_channels // 8, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = Scale(0.0)

    def forward(self, x):
        _, _, h, _ = x.size()
        query, key, value = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        neg_inf_diag = torch.diag(torch.full((h,), float("-inf")))
        energy_h = torch.einsum("bchw,bciw->bwhi", query, key) + neg_inf_diag
        energy_h = energy_h.transpose(1, 2)
        energy_w = torch.einsum("bchw,bchj->bhwj", query, key)
        attn = F.softmax(torch.cat([energy_h, energy_w], dim=-1), dim=-1)
        out = torch.einsum("bciw,bhwi->bchw", value, attn[..., :h])
        out = out + torch.einsum("bchj,bhwj->bchw", value, attn[..., h:])
        return self.gamma(out) + x


class CCHead(FCNHead):
    def __init__(self, in_channels, channels, num_classes, recurrence=2):
        super().__init__(in_channels, channels, num_classes, num_convs=2)
        self.recurrence = recurrence
        self.cca = CrissCrossAttention(channels)

    def forward(self, x):
        out = self.convs[0](x)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.convs[1](out)
        return self.cls_seg(self.conv_cat(torch.cat([x, out], dim=1)))


class ISARelation(nn.Module):
    """mmseg ``ISAHead``'s ``SelfAttentionBlock`` (``global_relation``/``local_relation``):
    query/key = two 1x1 ConvModules to ``isa_channels``, value = plain 1x1 conv **with bias**
    (C -> C), attention ``softmax(q k^T / sqrt(isa_channels))`` over keys, then
    ``output_project`` (1x1 ConvModule C -> C). No residual."""

    def __init__(self, channels, isa_channels):
        super().__init__()
        self.key_project = nn.Sequential(ConvModule(channels, isa_channels, 1),
                                         ConvModule(isa_channels, isa_channels, 1))
        self.query_project = nn.Sequential(ConvModule(channels, isa_channels, 1),
                                           ConvModule(isa_channels, isa_channels, 1))
        self.value_project = nn.Conv2d(channels, channels, 1)
        self.output_project = ConvModule(channels, channels, 1)
        self.isa_channels = isa_channels

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query_project(x).flatten(2)  # (b, d, n)
        k = self.key_project(x).flatten(2)
        v = self.value_project(x).flatten(2)  # (b, c, n)
        attention = torch.einsum("bdi,bdj->bij", q, k) / self.isa_channels ** 0.5
        out = torch.einsum("bij,bcj->bci", attention.softmax(dim=-1), v)
        return self.output_project(out.reshape(b, c, h, w))


class ISAHead(nn.Module):
    """mmseg ``ISAHead``: ``in_conv`` (3x3), zero padding to multiples of ``down_factor``
    (``pad // 2`` before), the *global* relation among pixels ``down_factor`` apart (the
    strided sub-grids ``x[:, :, p::P_h, q::P_w]``), then the *local* relation within each
    contiguous ``P_h x P_w`` block, crop, ``out_conv(concat([attention, residual]))``
    (1x1), ``conv_seg``. Written with explicit slicing loops (not mmseg's reshapes)."""

    def __init__(self, in_channels, channels, isa_channels, num_classes, down_factor=(8, 8)):
        super().__init__()
        self.down_factor = down_factor
        self.in_conv = ConvModule(in_channels, channels, 3, padding=1)
        self.global_relation = ISARelation(channels, isa_channels)
        self.local_relation = ISARelation(channels, isa_channels)
        self.out_conv = ConvModule(2 * channels, channels, 1)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        residual = self.in_conv(inputs)
        _, _, h, w = residual.shape
        ph, pw = self.down_factor
        pad_h, pad_w = -h % ph, -w % pw
        x = F.pad(residual, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        glob = torch.empty_like(x)
        for p in range(ph):
            for q in range(pw):
                glob[:, :, p::ph, q::pw] = self.global_relation(x[:, :, p::ph, q::pw])
        local = torch.empty_like(x)
        for top in range(0, x.shape[2], ph):
            for left in range(0, x.shape[3], pw):
                block = glob[:, :, top:top + ph, left:left + pw]
                local[:, :, top:top + ph, left:left + pw] = self.local_relation(block)
        out = local[:, :, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
        out = self.out_conv(torch.cat([out, residual], dim=1))
        return self.conv_seg(self.dropout(out))


# ---------------------------------------------------------------------------------------------
# EncoderDecoder
# ---------------------------------------------------------------------------------------------


class EncoderDecoder(nn.Module):
    """``backbone`` + ``decode_head`` (on stage 4) + optional ``auxiliary_head`` (stage 3).

    ``forward`` returns ``{name: logits}`` at feature resolution, or resized to the input
    (bilinear, ``align_corners=False``) with ``resize=True``; DAHead gives ``logits``, ``pam``,
    ``cam``.
    """

    def __init__(self, backbone, decode_head, auxiliary_head=None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        if auxiliary_head is not None:
            self.auxiliary_head = auxiliary_head

    def forward(self, x, resize=True):
        feats = self.backbone(x)
        out = self.decode_head(feats[3])
        outputs = dict(zip(("logits", "pam", "cam"), out)) if isinstance(out, tuple) else {
            "logits": out}
        if hasattr(self, "auxiliary_head"):
            outputs["aux"] = self.auxiliary_head(feats[2])
        if resize:
            outputs = {k: F.interpolate(v, size=x.shape[2:], mode="bilinear",
                                        align_corners=False) for k, v in outputs.items()}
        return outputs


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def randomize(module, seed=0):
    """Random parameters and BatchNorm statistics (positive variances); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_var", ".scale")):  # variances, Scale gammas
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(".weight") and tensor.ndim == 1:  # BN scale
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim == 4:  # conv kernels: fan-in scaled so activations stay O(1)
                fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
            else:  # biases, running means
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return module.eval()


def state_dict_numpy(module, prefix=""):
    """``{prefix + key: ndarray}`` without ``num_batches_tracked``."""
    return {
        prefix + key: value.detach().cpu().numpy()
        for key, value in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def run_nchw(module, x_nhwc, **kwargs):
    """Run ``module`` on a NHWC NumPy array; outputs (tensor, tuple or dict) back as NHWC."""
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))),
                     **kwargs)

    def back(t):
        return t.numpy().transpose(0, 2, 3, 1)

    if isinstance(out, dict):
        return {k: back(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return tuple(back(t) for t in out)
    return back(out)
