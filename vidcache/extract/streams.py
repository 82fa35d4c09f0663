"""Which stream of a file a view reads: FFmpeg's own choice (`av_find_best_stream`, what ffmpeg,
ffplay and torchcodec take by default: the default-flagged stream first, then the one with more
decoded frames, then the higher bit rate), or the stream index asked for with `--video-stream` /
`--audio-stream` (FFmpeg's index, as `ffprobe` lists it). Errors are `VideoFailure`s naming the
option and the streams the file has."""

from __future__ import annotations

import av

from ..errors import VideoFailure, ViewAbsent


def _is_cover(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _listed(streams: list) -> str:
    return ", ".join(str(s.index) for s in streams) or "none"


def _not_found(kind: str, index: int, container: av.container.InputContainer, streams: list) -> str:
    """The reason for a `--video-stream` / `--audio-stream` index that is not a stream of that kind."""
    kinds = {s.index: s.type for s in container.streams}
    what = f"stream {index} is {kinds[index]}, not {kind}" if index in kinds else f"the file has no stream {index}"
    return f"--{kind}-stream {index}: {what}; its {kind} streams are {_listed(streams)}"


def pick_video_stream(container: av.container.InputContainer, *, index: int | None) -> av.video.stream.VideoStream:
    """The video stream to decode. FFmpeg's best video stream unless `index` is given; a cover
    picture (attached_pic: album art, a one-frame "video") is never taken by default."""
    streams = list(container.streams.video)
    if index is not None:
        chosen = next((s for s in streams if s.index == index), None)
        if chosen is None:
            raise VideoFailure(_not_found("video", index, container, streams))
        return chosen
    moving = [s for s in streams if not _is_cover(s)]
    if not moving:
        what = "audio with a cover picture only" if streams else "audio-only or data file"
        raise VideoFailure(f"no video stream ({what})")
    best = container.streams.best("video")
    return best if best is not None and not _is_cover(best) else moving[0]


def pick_audio_stream(container: av.container.InputContainer, *, index: int | None) -> av.audio.stream.AudioStream:
    """The audio stream to decode: FFmpeg's best audio stream unless `index` is given;
    `ViewAbsent` when the file has none (and none was asked for)."""
    streams = list(container.streams.audio)
    if index is not None:
        chosen = next((s for s in streams if s.index == index), None)
        if chosen is None:
            raise VideoFailure(_not_found("audio", index, container, streams))
        return chosen
    if not streams:
        raise ViewAbsent("no audio stream")
    return container.streams.best("audio") or streams[0]
