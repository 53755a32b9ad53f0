"""``ClipFrames``: a clip decoded frame by frame, against upstream's loaders of the same sources.

No model: each source (a folder of frames, a list of PIL images, an MP4) is loaded whole by upstream's own
loader and frame by frame here, and compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3_trt.errors import Sam3TrtError
from sam3_trt.specs import RESOLUTION

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The drawn clip as PIL frames, a folder of PNGs and an MP4 (OpenCV's MPEG-4 writer, as ``track``'s)."""
    import cv2

    from sam3_trt.assets.images import demo_clip

    frames = demo_clip(FRAMES)
    root = tmp_path_factory.mktemp("clip")
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:05d}.png")
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, frames[0].size)
    for frame in frames:
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()
    return frames, folder, video


def _upstream(resource):
    from sam3.model.io_utils import load_resource_as_video_frames

    return load_resource_as_video_frames(resource, RESOLUTION, offload_video_to_cpu=True)


def test_folder_and_image_list_frames_are_upstream_loaders_bit_for_bit(clip):
    from sam3_trt.video.frames import ClipFrames

    frames, folder, _ = clip
    for resource in (str(folder), frames):
        images, height, width = _upstream(resource)
        streamed = ClipFrames(resource, cache_frames=3)
        assert len(streamed) == FRAMES and (streamed.video_height, streamed.video_width) == (height, width)
        for i in range(FRAMES):
            assert streamed[i].dtype == images[i].dtype == torch.float16
            assert torch.equal(streamed[i], images[i]), (type(resource), i)
        assert streamed.decoded == FRAMES and len(streamed._cache) == 3  # the cache stays at its bound


def test_video_frames_are_upstream_cv2_frames_scaled_to_unit_range(clip):
    """Same decode and resize as upstream's OpenCV loader; only the scale differs: upstream 0.1.4 normalises
    0..255 values as if they were 0..1 (its frames reach 509), here they are divided by 255 first."""
    from sam3_trt.video.frames import ClipFrames

    _, _, video = clip
    images, height, width = _upstream(str(video))
    streamed = ClipFrames(video)
    assert len(streamed) == FRAMES and (streamed.video_height, streamed.video_width) == (height, width)
    assert streamed.fps == 10.0 and float(images.max()) > 100  # upstream's scale
    for i in range(FRAMES):
        expected = (images[i].float() + 1.0) / 255.0 - 1.0  # (x - .5) / .5 of x / 255, from upstream's 2x - 1
        got = streamed[i].float()
        assert got.min() >= -1.0 and got.max() <= 1.0
        assert float((got - expected).abs().max()) <= 1e-3, i  # float16 storage of [-1, 1]


def test_video_frames_read_backwards_and_out_of_order_are_the_frames_read_in_order(clip):
    """Upstream's "both" direction reads frames backwards: each read equals the in-order read, with one
    seek per cache-full of frames (decoded forward from it), and the cache never holds more than its bound."""
    from sam3_trt.video.frames import ClipFrames

    _, _, video = clip
    forward = [f.clone() for f in ClipFrames(video, cache_frames=1)]
    streamed = ClipFrames(video, cache_frames=4)
    order = [5, 4, 3, 2, 1, 0, 11, 7, 6, 8]
    for i in order:
        assert torch.equal(streamed[i], forward[i]), i
        assert len(streamed._cache) <= 4
    # 5: read forward; 4: behind, so 1..4 decoded after one seek (3..1 then cached); 0: a seek; 11: read
    # forward; 7: behind, 4..7 after a seek (6 cached); 8: next in line
    assert streamed.decoded == 12 and streamed._reader.seeks == 3
    originals = ClipFrames(video)
    for i in range(FRAMES):  # at the clip's size, in order from a reader of its own, never seeking
        image = originals.original(i)
        assert image.size == (320, 240)
        # MPEG-4 is lossy: the original is what the model frame was resized from, near the drawn frame
        assert np.abs(np.asarray(image, int) - np.asarray(clip[0][i], int)).mean() < 8
    assert originals.decoded == 0 and originals._original_reader.seeks == 0


def test_bad_clips_are_one_line(clip, tmp_path):
    from sam3_trt.video.frames import ClipFrames

    frames, folder, _ = clip
    with pytest.raises(Sam3TrtError, match=r"resource_path='.*missing' does not exist"):
        ClipFrames(tmp_path / "missing")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(Sam3TrtError, match=r"broken\.mp4': no frame could be decoded"):
        ClipFrames(tmp_path / "broken.mp4")
    odd = tmp_path / "odd"
    odd.mkdir()
    frames[0].save(odd / "first.png")
    with pytest.raises(Sam3TrtError, match=r"frames are named <index>\.<ext>"):
        ClipFrames(odd)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frames[0].save(mixed / "0.png")
    frames[1].resize((160, 120)).save(mixed / "1.png")
    streamed = ClipFrames(mixed)
    with pytest.raises(Sam3TrtError, match="frame 1 is 160x120, the clip's first frame 320x240"):
        streamed[1]
    with pytest.raises(IndexError, match=r"frame 2 is outside the clip \(0..1\)"):
        streamed[2]
    with pytest.raises(Sam3TrtError, match="cache_frames=0"):
        ClipFrames(folder, cache_frames=0)
