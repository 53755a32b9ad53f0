"""Upstream's automatic masks for SAM3: SAM2's ``SAM2AutomaticMaskGenerator`` over SAM3's interactive predictor.

SAM3 ships no automatic-mask generator; its click predictor (``SAM3InteractiveImagePredictor``) is SAM2's, so the
eager reference for :class:`~sam3_trt.runtime.automatic.Sam3AutomaticMaskGenerator` is SAM2 1.1.0's generator
driving that predictor, each crop encoded the way ``Sam3Image.predict_inst`` sees an image: SAM3's processor
encodes it, and the tracker's backbone levels (plus the no-memory embedding) become the predictor's features.
"""

from __future__ import annotations

from typing import Any


def upstream_automatic_generator(processor: Any, tracker: Any, **params: Any) -> Any:
    """SAM2's generator whose predictor reads SAM3's features of each crop.

    Args:
        processor: Upstream ``Sam3Processor`` over an image model (encodes each crop; its backbone must give the
            tracker levels, as a model built with ``enable_inst_interactivity=True`` does).
        tracker: The tracker the click predictor runs (``model.inst_interactive_predictor.model``).
        **params: ``SAM2AutomaticMaskGenerator`` arguments (``points_per_side``, thresholds, ...).
    """
    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    generator = SAM2AutomaticMaskGenerator(tracker, **params)
    # hole filling and speck removal off, as Sam3AutomaticMaskGenerator's min_mask_region_area=0
    predictor = SAM3InteractiveImagePredictor(tracker, max_hole_area=0, max_sprinkle_area=0).eval()

    def set_image(crop: Any) -> None:
        predictor.reset_predictor()
        state = processor.set_image(Image.fromarray(crop))
        _, feats, _, _ = predictor.model._prepare_backbone_features(state["backbone_out"]["sam2_backbone_out"])
        feats[-1] = feats[-1] + predictor.model.no_mem_embed
        sizes = predictor._bb_feat_sizes
        levels = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats[::-1], sizes[::-1], strict=True)][::-1]
        predictor._features = {"image_embed": levels[-1], "high_res_feats": levels[:-1]}
        predictor._orig_hw = [(state["original_height"], state["original_width"])]
        predictor._is_image_set = True

    predictor.set_image = set_image
    generator.predictor = predictor
    return generator
