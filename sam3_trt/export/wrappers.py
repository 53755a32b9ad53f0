"""``torch.nn.Module`` wrappers that cut sam3's image model into the three graphs of :mod:`sam3_trt.specs`.

Each wrapper's ``forward`` takes the spec's inputs in spec order and returns its outputs in spec order;
the exporter names them from the spec. The computation is upstream's own code (``forward_image``, the
text transformer, ``forward_grounding``); the wrappers only change how tensors enter and leave.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..specs import SPECS


class VisionEncoder(nn.Module):
    """``pixel_values [B,3,1008,1008]`` -> ``fpn0, fpn1, fpn2`` (``backbone.forward_image``'s ``backbone_fpn``)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.backbone.forward_image(pixel_values)
        return tuple(out["backbone_fpn"])


class TextEncoder(nn.Module):
    """``input_ids [P,32]`` -> ``text_features [P,32,256]`` (batch first), ``text_mask [P,32]`` (True = padding).

    Same computation as ``VETextEncoder.forward`` after tokenisation; the tokenizer runs outside the
    graph (:mod:`sam3_trt.runtime` has a torch-free copy of it).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text = model.backbone.language_backbone

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, memory = self.text.encoder(input_ids)  # [P, 32, width]
        features = self.text.resizer(memory)  # [P, 32, 256]
        return features, input_ids == 0


class Decoder(nn.Module):
    """Prompt encoding, fusion encoder, DETR decoder, scoring and mask head: ``forward_grounding``.

    Inputs follow :data:`sam3_trt.specs.DECODER`: the image features of one image (batch 1, broadcast
    over the P prompts), P text prompts and N right-padded boxes per prompt.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.position_encoding = model.backbone.vision_backbone.position_encoding

    def forward(
        self,
        fpn0: torch.Tensor,
        fpn1: torch.Tensor,
        fpn2: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        boxes: torch.Tensor,
        box_labels: torch.Tensor,
        box_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from sam3.model.data_misc import FindStage
        from sam3.model.geometry_encoders import Prompt

        num_prompts = text_features.shape[0]
        fpn = [fpn0, fpn1, fpn2]
        backbone_out = {
            "backbone_fpn": fpn,
            # sine encodings depend only on the shapes: constants in the graph
            "vision_pos_enc": [self.position_encoding(x).to(x.dtype) for x in fpn],
            "language_features": text_features.transpose(0, 1),
            "language_mask": text_mask,
        }
        ids = torch.arange(num_prompts, device=text_features.device)
        find_input = FindStage(
            img_ids=ids * 0,  # every prompt looks at image 0; batch-1 features broadcast
            text_ids=ids,
            input_boxes=None,
            input_boxes_mask=None,
            input_boxes_label=None,
            input_points=None,
            input_points_mask=None,
        )
        prompt = Prompt(
            box_embeddings=boxes.transpose(0, 1),
            box_mask=box_mask,
            box_labels=box_labels.transpose(0, 1).long(),
        )
        out = self.model.forward_grounding(
            backbone_out=backbone_out, find_input=find_input, find_target=None, geometric_prompt=prompt
        )
        return (
            out["pred_logits"].squeeze(-1),
            out["pred_boxes"],
            out["presence_logit_dec"],
            out["pred_masks"],
            out["semantic_seg"],
        )


WRAPPERS: dict[str, type[nn.Module]] = {
    "vision_encoder": VisionEncoder,
    "text_encoder": TextEncoder,
    "decoder": Decoder,
}
assert set(WRAPPERS) == set(SPECS), "every graph spec needs a wrapper"
