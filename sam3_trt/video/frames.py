"""A clip's frames, decoded when upstream's video model asks for one: memory bounded whatever the clip's length.

Upstream's loaders (``sam3.model.io_utils``) decode the whole clip when a session starts: 6 MB per frame at
1008 px in float16 (12 MB in float32 from a video file), so ten minutes of 30 fps video take over 100 GB.
Upstream's video model indexes the clip one frame at a time (``img_batch[frame]``) and accepts any indexable
object for it (its own asynchronous folder loader is one); :class:`ClipFrames` is such an object. It decodes
frame ``i`` when asked, with the preprocessing upstream's loader of that kind of source applies, and keeps
the last :data:`DEFAULT_CACHE_FRAMES` frames.

Preprocessing, as upstream's loader of each source does it:

* a folder of ``<index>.<ext>`` frames: PIL RGB, torchvision ``resize`` to 1008x1008, ``to_tensor``, float16,
  ``(x - 0.5) / 0.5`` in float16 (``_load_img_as_tensor`` in ``load_video_frames_from_image_folder``);
* a list of PIL images: PIL ``resize``, ``/ 255``, float16, the same normalisation
  (``load_resource_as_video_frames``);
* a video file (OpenCV): BGR to RGB, ``cv2.resize`` (bicubic), ``/ 255``, the same normalisation, float16.
  Upstream 0.1.4's OpenCV loader leaves the ``/ 255`` out, so its frames span [-1, 509] instead of [-1, 1]
  (facebookresearch/sam3#493; fixes #522 and #603 open): frames here are scaled as upstream's folder, image
  and torchcodec loaders scale them, which is what the model saw in training.

Overlays (``sam3-trt track``) read the frames at their own size through a second reader (:meth:`ClipFrames.
original`), in order, so neither reader seeks back and neither holds more than a frame.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..specs import RESOLUTION

#: Frames :class:`ClipFrames` keeps decoded (float16 1008x1008: 6 MB each).
DEFAULT_CACHE_FRAMES = 8
#: A forward jump of at most this many frames in a video is decoded through, not sought (seeking decodes
#: from the previous key frame anyway, and OpenCV's seek is exact only where the container's index is).
_MAX_GRAB_AHEAD = 64
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)


class _ListReader:
    """Frames held as a list: PIL images, or image files opened when read (``open_file``)."""

    def __init__(self, items: list[Any], open_file: bool = False) -> None:
        self.items, self.open_file = items, open_file

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int) -> Any:
        if not self.open_file:
            return self.items[index]
        from PIL import Image

        try:
            with Image.open(self.items[index]) as image:
                return image.convert("RGB")
        except OSError as exc:
            raise Sam3TrtError(f"frame {index} ({str(self.items[index])!r}) is not a readable image ({exc})") from None

    def close(self) -> None:
        pass


class _VideoReader:
    """One OpenCV capture read forward; a frame behind it (or far ahead) is sought."""

    def __init__(self, path: Path, frames: int) -> None:
        import cv2

        self.path, self.frames, self._cv2 = path, frames, cv2
        self._capture = cv2.VideoCapture(str(path))
        self.next_index = 0  # the frame the capture reads next
        self.seeks = 0

    def __len__(self) -> int:
        return self.frames

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB ``uint8 [H, W, 3]``."""
        cv2 = self._cv2
        if not self.next_index <= index <= self.next_index + _MAX_GRAB_AHEAD:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.next_index = index
            self.seeks += 1
        while self.next_index < index:
            if not self._capture.grab():
                break
            self.next_index += 1
        ok, bgr = self._capture.read() if self.next_index == index else (False, None)
        if not ok:
            raise Sam3TrtError(
                f"{str(self.path)!r}: frame {index} of {self.frames} could not be decoded (a damaged file?)"
            )
        self.next_index = index + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()


def _count_video_frames(path: Path, name: str) -> tuple[int, int, int, float]:
    """Frames, height, width and frame rate of a video: every frame demuxed (``grab``, no conversion), because
    containers' frame counts can be wrong and upstream's loader reads until the decoder stops."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = 0
        while capture.grab():
            frames += 1
    finally:
        capture.release()
    if frames == 0:
        raise Sam3TrtError(f"{name}: no frame could be decoded (not a video, or a codec OpenCV lacks)")
    return frames, height, width, fps


class ClipFrames:
    """A clip decoded frame by frame, indexable as upstream's video model indexes its frames.

    Args:
        resource: A folder of ``<index>.<ext>`` frames, a video file (OpenCV), an image (a clip of one
            frame), or a list of PIL images.
        cache_frames: Model-input frames kept decoded (the most recently used).
        image_size: Side of the model's input frames (upstream's ``image_size``).
        name: How errors name the resource (default ``resource_path='...'``).

    ``clip[i]`` is frame ``i`` as upstream's loader of this source would give it (see the module doc):
    ``float16 [3, image_size, image_size]``. ``original(i)`` is frame ``i`` as a PIL RGB image at the clip's
    size. ``video_height``/``video_width`` are the clip's size, ``fps`` a video's frame rate (``None``
    otherwise), ``decoded`` how many model-input frames were decoded so far.

    Raises:
        Sam3TrtError: a missing path, a folder without frames or with frames not named by index, frames of
            different sizes (checked on the first and on each frame read), an unreadable video.
    """

    def __init__(
        self,
        resource: Any,
        cache_frames: int = DEFAULT_CACHE_FRAMES,
        image_size: int = RESOLUTION,
        name: str | None = None,
    ) -> None:
        if isinstance(cache_frames, bool) or not isinstance(cache_frames, int) or cache_frames < 1:
            raise Sam3TrtError(f"cache_frames={cache_frames!r}: keep 1 or more frames decoded")
        self.resource = resource
        self.image_size = image_size
        self.cache_frames = cache_frames
        self.fps: float | None = None
        self.decoded = 0
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self.kind, source = check_clip(resource, name)
        if self.kind == "images":
            self._make_reader = lambda: _ListReader(source)
            width, height = source[0].size
        elif self.kind == "folder":
            self._make_reader = lambda: _ListReader(source, open_file=True)
            width, height = _ListReader(source, open_file=True).read(0).size
        else:
            frames, height, width, fps = _count_video_frames(source, name or f"resource_path={str(source)!r}")
            self.fps = fps if fps > 0 else None
            self._make_reader = lambda: _VideoReader(source, frames)
        self.video_height, self.video_width = height, width
        self._reader: Any = self._make_reader()
        self._frames = len(self._reader)
        self._original_reader: Any = None

    def __len__(self) -> int:
        return self._frames

    def __getitem__(self, index: int) -> Any:
        index = self._check(index)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        if self._reader is None:  # closed: decoding starts again
            self._reader = self._make_reader()
        first = index
        if self.kind == "video" and index < self._reader.next_index:
            # going backwards (upstream's "both" direction): one seek, then the frames up to this one
            # decoded forward and kept, instead of a seek (a decode from the key frame) per frame
            first = max(0, index - self.cache_frames + 1)
        for i in range(first, index + 1):
            if i not in self._cache:
                self._cache[i] = self._preprocess(self._checked_size(self._reader.read(i), i))
                self.decoded += 1
            self._cache.move_to_end(i)
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return self._cache[index]

    def original(self, index: int) -> Any:
        """Frame ``index`` at the clip's size (PIL RGB), from a reader of its own (read in order: no seeking)."""
        from PIL import Image

        index = self._check(index)
        if self._original_reader is None:
            self._original_reader = self._make_reader()
        frame = self._checked_size(self._original_reader.read(index), index)
        return frame if isinstance(frame, Image.Image) else Image.fromarray(frame)

    def close(self) -> None:
        """Release the decoders and the cached frames (a later read opens the clip again)."""
        for reader in (self._reader, self._original_reader):
            if reader is not None:
                reader.close()
        self._reader = self._original_reader = None
        self._cache.clear()

    def _check(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"frame {index!r} is outside the clip (0..{len(self) - 1})")
        return int(index)

    def _checked_size(self, frame: Any, index: int) -> Any:
        size = frame.size if hasattr(frame, "convert") else (frame.shape[1], frame.shape[0])
        if size != (self.video_width, self.video_height):
            raise Sam3TrtError(
                f"frame {index} is {size[0]}x{size[1]}, the clip's first frame {self.video_width}x"
                f"{self.video_height}: a clip has one size"
            )
        return frame

    def _preprocess(self, frame: Any) -> Any:
        import torch

        side = self.image_size
        mean = torch.tensor(_MEAN, dtype=torch.float16)[:, None, None]
        std = torch.tensor(_STD, dtype=torch.float16)[:, None, None]
        if self.kind == "folder":
            import torchvision.transforms.functional as TF

            image = TF.to_tensor(TF.resize(frame, size=(side, side))).to(torch.float16)
        elif self.kind == "images":
            pixels = np.array(frame.convert("RGB").resize((side, side))) / 255.0
            image = torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float16)
        else:
            import cv2

            resized = cv2.resize(frame, (side, side), interpolation=cv2.INTER_CUBIC)
            image = torch.from_numpy(resized.astype(np.float32) / 255.0).permute(2, 0, 1)
            mean, std = mean.float(), std.float()
        image -= mean
        image /= std
        return image.to(torch.float16).contiguous()


def check_clip(resource: Any, name: str | None = None) -> tuple[str, Any]:
    """What kind of clip ``resource`` is, checked without decoding it (each problem one line).

    Args:
        resource: A folder of ``<index>.<ext>`` frames, a video file, an image, or a list of PIL images.
        name: How errors name it (default ``resource_path=...``).

    Returns:
        ``("images", the list)``, ``("folder", frame files in order)`` (an image is a folder of one frame,
        preprocessed as upstream's single-image loader does) or ``("video", its path)``.
    """
    if isinstance(resource, list):
        from PIL import Image

        if not resource or not all(isinstance(im, Image.Image) for im in resource):
            raise Sam3TrtError(f"{name or 'resource_path'}: a list of frames must be a non-empty list of PIL images")
        return "images", resource
    if not isinstance(resource, (str, os.PathLike)):
        raise Sam3TrtError(
            f"{name or f'resource_path={resource!r}'}: give an MP4 file, a folder of <index>.<ext> frames, an image "
            "or a list of PIL images"
        )
    from sam3.model.io_utils import IMAGE_EXTS, VIDEO_EXTS

    path = Path(os.fspath(resource))
    name = name or f"resource_path={str(path)!r}"
    if path.is_dir():
        return "folder", frame_files(path, name)
    if not path.is_file():
        raise Sam3TrtError(f"{name} does not exist")
    if path.suffix.lower() in IMAGE_EXTS:
        return "folder", [path]
    if path.suffix.lower() not in VIDEO_EXTS:
        raise Sam3TrtError(
            f"{name}: not a video ({', '.join(VIDEO_EXTS)}), an image or a folder of <index>.<ext> frames"
        )
    if _cv2() is None:
        raise Sam3TrtError(
            f"{name}: reading videos needs OpenCV (pip install opencv-python-headless, in sam3-trt's [video] "
            f"extra); or extract frames (ffmpeg -i {path.name} frames/%05d.jpg)"
        )
    return "video", path


def _cv2() -> Any:
    """OpenCV, or ``None`` where it is not installed (it is the ``[video]`` extra)."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        return None
    import cv2

    return cv2


def frame_files(folder: Any, name: str) -> list[Any]:
    """A clip folder's frames, ``<index>.<ext>`` files sorted by index (what upstream's folder loader reads).

    Args:
        folder: The folder.
        name: How errors name it (``"resource_path='clip/'"``, ``"VIDEO 'clip/'"``).

    Raises:
        Sam3TrtError: no frame files, or one not named by its index.
    """
    from sam3.model.io_utils import IMAGE_EXTS

    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise Sam3TrtError(f"{name}: the folder has no frames ({', '.join(IMAGE_EXTS)})")
    bad = [p.name for p in files if not p.stem.isdigit()]
    if bad:
        raise Sam3TrtError(f"{name}: frames are named <index>.<ext> (00000.jpg, ...); got {bad[0]!r}")
    return sorted(files, key=lambda p: int(p.stem))
