"""Frames from a video, sampled the way Gemini samples them (1 per second unless videoMetadata.fps says otherwise),
for vision models that take a video as a sequence of images."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..admission import BUDGET
from .errors import MediaError
from .probe import _FFMPEG_FORMATS

if TYPE_CHECKING:
    from PIL import Image


def _open(source: Path | str | bytes) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).open("rb")


def sample_frames(source: Path | str | bytes, fps: float = 1.0, start: float = 0.0, end: float | None = None,
                  max_frames: int = 64, max_side: int = 768) -> list[Image.Image]:
    """RGB frames at `fps` between `start` and `end` seconds (videoMetadata.startOffset/endOffset), at most
    `max_frames`, each with its longest side at most `max_side` px.

    When the clip would give more than `max_frames` frames, the rate drops so the frames still span the whole clip
    (a model that sees only the first minute of an hour misses the rest). Raises MediaError if nothing decodes.
    """
    import av

    if fps <= 0 or max_frames < 1 or max_side < 1:
        raise ValueError("fps, max_frames and max_side must be positive")
    if start < 0 or (end is not None and end <= start):
        raise ValueError("need 0 <= start < end")
    bad = "The video could not be decoded: the data is damaged, truncated or not video."
    frames: list[Image.Image] = []
    try:
        with contextlib.ExitStack() as stack, _open(source) as data, \
                av.open(data, container_options={"format_whitelist": _FFMPEG_FORMATS},
                        metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaError("The file has no video stream.")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-threaded decoding: most of the cost here is decoding frames we skip
            # Claimed from the memory budget: a few full frames in the decoder's threads, and the thumbnails kept.
            ctx = stream.codec_context
            claim = (ctx.width or 0) * (ctx.height or 0) * 4 * 4 + max_frames * max_side * max_side * 3
            stack.enter_context(BUDGET.held(claim))
            # Offsets count from the first timestamp, which is not 0 in e.g. MPEG-TS.
            origin = (container.start_time or 0) / av.time_base
            if end is None and container.duration:
                end = container.duration / av.time_base
            step = 1.0 / fps
            if end is not None and (end - start) * fps > max_frames:
                step = (end - start) / max_frames
            if start > 0 and stream.time_base is not None:
                # Seek lands on the keyframe at or before `start`; frames before it are skipped below.
                container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True)
            target = start
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                t = frame.time - origin
                if t + 1e-6 < target:
                    continue
                if end is not None and t >= end:
                    break
                image = frame.to_image()  # RGB
                image.thumbnail((max_side, max_side))
                frames.append(image)
                if len(frames) >= max_frames:
                    break
                while target <= t + 1e-6:  # the next sample time after this frame
                    target += step
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError):
        raise MediaError(bad) from None
    if not frames:
        raise MediaError("No video frames could be decoded in the requested range.")
    return frames
