"""The version of the rules that turn a source into a view's rows, recorded in every view identity
as `fidelity`: a cache whose rows were made under older rules is refused, with the reason, rather
than silently mixed with rows made under the current ones."""

from __future__ import annotations

from pathlib import Path

FIDELITY_VERSION = 2
CHANGES = {
    2: (
        "audio downmix = mean of all channels (as VGGish), each view resized from the decoded frame by "
        "its own settings only, FFmpeg's default video/audio stream, exact high-bit-depth YUV to RGB, "
        "imported timestamps as row starts (i3d stack ends corrected)"
    ),
}


def stale_view_message(cache_dir: str | Path, view: str, recorded: dict) -> str | None:
    """Why the rows recorded for `view` cannot be extended by this version, or None when they can."""
    version = recorded.get("fidelity", 1)
    if version == FIDELITY_VERSION:
        return None
    if isinstance(version, int) and version > FIDELITY_VERSION:
        return (
            f"cache {cache_dir} holds view {view!r} made by a newer vidcache (fidelity {version}, this one "
            f"knows {FIDELITY_VERSION}); upgrade vidcache to add to it"
        )
    return (
        f"cache {cache_dir} holds view {view!r} made by an older vidcache (fidelity {version}); since "
        f"fidelity {FIDELITY_VERSION} ({CHANGES[FIDELITY_VERSION]}) the same settings give other rows, so "
        f"they are not mixed: write to a new --cache (or delete this one and extract again)"
    )
