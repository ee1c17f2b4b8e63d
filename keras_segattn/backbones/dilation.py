"""Dilation plans: which ResNet convolution gets which stride and dilation rate.

Attention segmentation models (DANet, CCNet, ...) run a ResNet at output stride 8: the strides
of the last stages are removed and their 3x3 convolutions dilated instead (Yu & Koltun,
"Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016, arXiv:1511.07122; Chen
et al., DeepLab, TPAMI 2017, arXiv:1606.00915), so pretrained weights keep computing the same
features at a higher resolution.

Rule (exact equivalence; TF-slim ``stack_blocks_dense``, torchvision
``replace_stride_with_dilation``): walk the blocks in order; when a stride would take the
feature map past ``output_stride`` it is set to 1 and every later 3x3 conv gets its dilation
multiplied by that stride. The conv that carried the stride keeps the rate it had before.

* Layouts with the stride on the first block's 3x3 conv (KerasHub's ResNet V1, vd and V2;
  mmsegmentation's ResNetV1c, ``style="pytorch"``): at OS8 stage 3 runs at rate 2 and stage 4
  at rate 4, and the first block of each dilated stage keeps half the rate in its strided
  3x3 conv (stage 3: 1, 2, 2, ...; stage 4: 2, 4, 4) -- torchvision's rule, mmseg's
  ``contract_dilation=True`` and the dilated ResNet of the official DANet code
  (PyTorch-Encoding ``resnet.py``: ``dilation=1`` or ``2`` for the first block of the stages
  dilated 2 and 4). ``block_rates`` gives these rates.
* ``multi_grid`` (DeepLabv3, DANet ``--multi-grid``): block ``i`` of the last stage has its
  rate multiplied by ``multi_grid[i % len(multi_grid)]``; that stage's first block then uses
  the full rate (not half), so ``multi_grid=(1, 2, 4)`` at OS8 gives DANet's
  ``multi_dilation=[4, 8, 16]``.
* The KerasCV layouts (the stride on the first block's 1x1 conv for V1, on the *last* block's
  3x3 conv for V2) follow the same rule through ``dilation_plan``; see
  ``keras_segattn.backbones.kerascv_resnet``.
"""

OUTPUT_STRIDES = (8, 16, 32)


def validate_output_stride(output_stride):
    """``output_stride`` as an int in ``OUTPUT_STRIDES`` or a ValueError naming it."""
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}. "
            "Use 8 for DANet/CCNet-style dilated backbones, 16 for a cheaper variant, "
            "32 for the plain (undilated) ResNet."
        )
    return int(output_stride)


def validate_multi_grid(multi_grid):
    """``None`` or a list of positive ints, or a ValueError naming the value."""
    if multi_grid is None:
        return None
    try:
        grid = [int(g) for g in multi_grid]
        ok = len(grid) > 0 and all(g >= 1 and g == m for g, m in zip(grid, multi_grid))
    except (TypeError, ValueError):
        ok = False
    if isinstance(multi_grid, str):
        ok = False
    if not ok:
        raise ValueError(
            f"multi_grid must be None or a non-empty sequence of positive ints such as "
            f"(1, 2, 4), got {multi_grid!r}."
        )
    return grid


def dilation_plan(version, block_type, stackwise_blocks, stackwise_strides, output_stride,
                  multi_grid=None):
    """Per stage, per block: ``(stride, rate_before, rate_after)``.

    ``version`` 1: the stage's stride sits in its first block; 2: in its last block (KerasCV
    V2). ``stride`` is the effective stride of the block's strided conv(s); ``rate_before`` is
    the dilation of the conv carrying the stride (and of 3x3 convs before it), ``rate_after``
    the dilation of 3x3 convs after it, both multiplied by the block's ``multi_grid`` factor
    in the last stage. ``block_type`` is accepted for the call sites' symmetry; the plan does
    not depend on it.
    """
    del block_type
    output_stride = validate_output_stride(output_stride)
    multi_grid = validate_multi_grid(multi_grid)
    current, rate = 4, 1  # the stem (conv + max-pool) has stride 4
    plan = []
    last_stage = len(stackwise_blocks) - 1
    for stage, (blocks, stride) in enumerate(zip(stackwise_blocks, stackwise_strides)):
        stage_plan = []
        for block in range(blocks):
            strided = block == (0 if version == 1 else blocks - 1)
            nominal = stride if strided else 1
            grid = multi_grid[block % len(multi_grid)] if multi_grid and stage == last_stage else 1
            before = rate
            if nominal > 1 and current * nominal > output_stride:
                effective, rate = 1, rate * nominal
            else:
                effective, current = nominal, current * nominal
            stage_plan.append((effective, before * grid, rate * grid))
        plan.append(stage_plan)
    return plan


def block_rates(stackwise_blocks, stackwise_strides, output_stride, multi_grid=None,
                contract_dilation=True):
    """Per stage, per block: ``(stride, first_rate, rate)`` for layouts with the stride on the
    first block's 3x3 conv.

    ``first_rate`` is the dilation of the block's first 3x3 conv (the one that carries the
    stride in the stage's first block: the bottleneck's only 3x3 conv, a basic block's
    ``conv1``), ``rate`` that of the 3x3 convs after it (a basic block's ``conv2``). With
    ``contract_dilation`` (default, see the module docstring) a dilated stage's first block
    keeps the rate from before its stride was removed; not in the last stage when
    ``multi_grid`` is given.

    Raises:
        ValueError: when a conv would need both a stride and a dilation (``output_stride=32``
            with ``multi_grid[0] > 1``): Keras convolutions cannot do both.
    """
    plan = dilation_plan(1, None, stackwise_blocks, stackwise_strides, output_stride,
                         multi_grid)
    last = len(plan) - 1
    rates = []
    for stage, stage_plan in enumerate(plan):
        contract = contract_dilation and not (multi_grid and stage == last)
        stage_rates = []
        for block, (stride, before, after) in enumerate(stage_plan):
            first = before if contract else after
            if stride > 1 and first > 1:
                raise ValueError(
                    f"stage {stage + 1}, block {block + 1}: a strided conv cannot also be "
                    f"dilated (stride {stride}, dilation {first}); this happens with "
                    "output_stride=32 and multi_grid[0] > 1. Use output_stride 8 or 16 with "
                    "multi_grid, or a multi_grid starting with 1."
                )
            stage_rates.append((stride, first, after))
        rates.append(stage_rates)
    return rates
