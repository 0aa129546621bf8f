"""Finer stages after a decoder that predicts at 1/4 scale: outlines drawn at 1/2 or full scale.

FPN, DeepLabV3+, UPerNet and PAN decode at a quarter of the input's resolution and upsample
their class scores ×4; objects a few pixels across, and every outline, are then drawn from a
grid four pixels wide. U-Net-like decoders draw them at full resolution but pay for a whole
decoder at the high resolutions, which halved the images trained per minute on a CPU
(benchmarks/README.md). `model.decoder_output_stride=2` adds one light stage instead: the
decoder's output brought to 1/2 scale and merged with the encoder's own stride-2 features
(the stem's edges, which those decoders never see), one 3×3 convolution, then the class scores
upsampled ×2. `model.decoder_output_stride=1` adds a second stage after it: that output brought
to the image's own size and merged with the (normalised) image itself, one 3×3 convolution to
16 channels, scores with no upsampling at all.

`auto` (the default) adds both when the export's outlines are a large share of what is to be
learnt (`auto_output_stride`): on bbbc039's nuclei at 10 minutes, unweighted CE, test mIoU
0.9606 with the stride-2 stage, 0.9654 with both (the plain FPN: about 0.94); the stride-2 stage
alone cost ccp's large garments 6-14% through the 14% fewer images per second it trains.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from torch import nn

from seglab.errors import ConfigError

STRIDES = (1, 2, 4)
QUARTER_SCALE_ARCHS = ("fpn", "deeplabv3plus", "upernet", "pan")  # heads that upsample ×4
# `auto` adds the stages when at least this share of the training pixels lies within 2 pixels of
# another class. Measured on the shared exports: bbbc039 (nuclei ~25 px across) 0.14, where the
# stage paid; ccp (garments, people) 0.075, where it cost more time than it gained.
OUTLINE_SHARE_FOR_FINE_STAGES = 0.10


def auto_output_stride(arch: str, encoder_name: str, outline_share: float | None) -> int | None:
    """`model.decoder_output_stride: auto` -> 1 for an architecture that decodes at 1/4 scale,
    with an smp encoder that has stride-2 features, on data whose outlines are at least
    OUTLINE_SHARE_FOR_FINE_STAGES of the training pixels (`SegmentationDataModule.outline_share`);
    else null, the architecture as smp builds it."""
    if outline_share is None or outline_share < OUTLINE_SHARE_FOR_FINE_STAGES:
        return None
    if arch.lower() not in QUARTER_SCALE_ARCHS:
        return None
    encoder = smp.encoders.encoders.get(encoder_name, {})  # tu- encoders: not known unbuilt
    channels = encoder.get("params", {}).get("out_channels", [0, 0])
    return 1 if channels[1] > 0 else None


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FineStageDecoder(nn.Module):
    """The architecture's decoder followed by the stride-2 merge with the encoder's stride-2
    features and, for stride 1, a full-resolution merge with the input image itself (keys
    `decoder.decoder.*` for the original decoder, `decoder.merge.*` and `decoder.merge_full.*`
    for the stages)."""

    def __init__(
        self, decoder: nn.Module, decoder_channels: int, skip_channels: int, image_channels: int = 0
    ):
        super().__init__()
        self.decoder = decoder
        self.out_channels = max(16, decoder_channels // 2)
        self.merge = _conv_bn_relu(decoder_channels + skip_channels, self.out_channels)
        self.merge_full = None
        if image_channels:
            self.merge_full = _conv_bn_relu(self.out_channels + image_channels, 16)
            self.out_channels = 16

    @staticmethod
    def _merged(coarse: torch.Tensor, skip: torch.Tensor, merge: nn.Module) -> torch.Tensor:
        coarse = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return merge(torch.cat([coarse, skip.to(coarse.dtype)], dim=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        fine = self._merged(self.decoder(features), features[1], self.merge)  # stride-2 features
        if self.merge_full is not None:
            fine = self._merged(fine, features[0], self.merge_full)  # the image itself
        return fine


def set_decoder_output_stride(model: nn.Module, stride: int | None, arch: str) -> None:
    """`model.decoder_output_stride`: null or 4 keeps the architecture as smp builds it; 2 adds
    the stride-2 stage to an architecture whose head upsamples its scores ×4, 1 both stages."""
    if stride is None:
        return
    key = f"model.decoder_output_stride={stride!r}"
    if type(stride) is not int or stride not in STRIDES:
        raise ConfigError(
            f"{key}: give 1 or 2 (finer outlines), 4 or null (the architecture's own)"
        )
    head = model.segmentation_head
    upsample = next((m for m in head if isinstance(m, nn.Upsample)), None)
    own = int(upsample.scale_factor) if upsample is not None else 1
    if stride == own:
        return
    stem_channels = model.encoder.out_channels[1]
    conv = head[0]
    if own != 4 or stride > 2 or not isinstance(conv, nn.Conv2d) or stem_channels <= 0:
        raise ConfigError(
            f"{key}: model.arch={arch} predicts at 1/{own} scale and only a ×4 head with an "
            "encoder that has stride-2 features can add the finer stages; use e.g. "
            "model=fpn, or leave model.decoder_output_stride=null"
        )
    image_channels = model.encoder.out_channels[0] if stride == 1 else 0
    model.decoder = FineStageDecoder(model.decoder, conv.in_channels, stem_channels, image_channels)
    model.segmentation_head = SegmentationHead(
        model.decoder.out_channels, conv.out_channels, conv.kernel_size[0], upsampling=stride
    )
