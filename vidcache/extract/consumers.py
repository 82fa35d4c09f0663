"""What each video view takes from the one decode pass.

A consumer names the sample times it needs (`targets_s`), receives the decoded frame on screen at
each of them (`feed`), and turns them into `Chunk`s of rows: model inputs for the model thread
(clip frames; a view's own consumer, in its folder, may make others: S3D windows, or finished rows
such as flow fields computed in the decode worker so TV-L1 runs in parallel over workers). Each
consumer holds at most one window of frames or flow pairs, so memory does not grow with video length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import SamplingConfig
from .sampling import sample_times


@dataclass
class Chunk:
    """Rows of one view of one video, in time order."""

    view: str
    times_s: np.ndarray  # start of each row: the time of the (first) frame shown
    end_times_s: np.ndarray | None  # end of each row's span (windows, flow pairs, audio examples)
    data: torch.Tensor | np.ndarray  # model input when `encoded` is False, else the stored rows
    encoded: bool
    repeats: np.ndarray | None = None  # row k stands for repeats[k] sample times (clip view)

    def __len__(self) -> int:
        return len(self.times_s)


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 HxWx3 → short side `short_side`, aspect kept (antialiased bilinear, as torchvision)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    height, width = rgb.shape[:2]
    if min(height, width) == short_side:
        return rgb
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    image = TF.resize(image, short_side, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image.permute(1, 2, 0).contiguous().numpy()


class Consumer:
    view_names: tuple[str, ...]  # cache views this consumer produces
    max_short_side: int | None = None  # how large a frame it needs (RGB conversion pre-shrinks to it)
    device_frames: bool = False  # `feed` also takes an HxWx3 uint8 torch tensor on the GPU (NVDEC)

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        """The frame shown at own target times `indices` (ascending, consecutive)."""
        raise NotImplementedError

    def finish(self) -> list[Chunk]:
        return []

    def tail_indices(self) -> np.ndarray | None:
        """After the last frame: own target indices still to be given the last decoded frame, when
        this consumer was fed nothing at all but must still have rows (None: no such need)."""
        return None


class ClipFrames(Consumer):
    """One row per sample time (`--fps` / `--num-frames`); a frame shown at several sample times is
    encoded once and repeated."""

    device_frames = True  # the encoder's prepare (torch resize/crop) runs where the frame is

    def __init__(self, encoder, sampling: SamplingConfig, *, batch_size: int):
        self.encoder, self.sampling, self.batch_size = encoder, sampling, batch_size
        self.view_names = (encoder.view,)
        size = getattr(encoder, "preprocess", None)
        # an encoder that resizes before it crops (timm: size / crop_pct) says how large a frame it needs
        self.max_short_side = getattr(encoder, "max_short_side", None) or (min(size.size) if size is not None else None)
        self._times: list[float] = []
        self._images: list[torch.Tensor] = []
        self._repeats: list[int] = []
        self._expected = 0
        self._rows = 0
        self._last: tuple[torch.Tensor, float] | None = None

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        targets = sample_times(self.sampling, start_s=origin_s, end_s=end_s)
        self._expected = len(targets)
        return targets

    def _chunk(self) -> Chunk:
        chunk = Chunk(
            self.view_names[0],
            np.array(self._times),
            None,
            torch.stack(self._images),
            False,
            np.array(self._repeats),
        )
        self._times, self._images, self._repeats = [], [], []
        return chunk

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        image = self.encoder.prepare(rgb)
        self._images.append(image)
        self._times.append(time_s)
        self._repeats.append(len(indices))
        self._rows += len(indices)
        self._last = (image, time_s)
        return [self._chunk()] if len(self._images) >= self.batch_size else []

    def tail_indices(self) -> np.ndarray | None:
        # N-frame sampling always has N rows; when every sample time lies past the last frame (a
        # header that promises more than the file holds) the last decoded frame stands for all
        if self.sampling.num_frames is not None and self._rows == 0 and self._expected > 0:
            return np.arange(self._expected)
        return None

    def finish(self) -> list[Chunk]:
        missing = self._expected - self._rows
        if self.sampling.num_frames is not None and missing > 0 and self._rows:  # N-frame sampling: N rows
            if not self._images:  # the last frame went out with a full batch: send it again for the rest
                image, time_s = self._last
                self._images, self._times, self._repeats = [image], [time_s], [0]
            self._repeats[-1] += missing
            self._rows += missing
        return [self._chunk()] if self._images else []
