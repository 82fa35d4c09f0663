"""Each extraction stage alone, driven with hand-made messages, its output checked against an
independent computation (no engine, no threads, no models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidcache import Cache
from vidcache.cache.catalog import Catalog
from vidcache.cache.store import CacheWriter, SourceStat
from vidcache.config import RunConfig
from vidcache.extract.consumers import Chunk, Consumer
from vidcache.extract.plan import ExtractSummary
from vidcache.extract.stages import (
    AssembleStage,
    ChunkMessage,
    DecodeStage,
    ModelStage,
    VideoDecoded,
    VideoRows,
    VideoTask,
    WriteStage,
    rows_in,
)
from vidcache.manifest import VideoEntry
from vidcache.synth import write_video


def task(index: int = 0, views: tuple[str, ...] = ("clip",), video_id: str = "v") -> VideoTask:
    return VideoTask(index, VideoEntry(path=f"/nowhere/{video_id}.mp4", video_id=video_id), None, views)


class DoublingEncoder:
    """A model whose rows are easy to compute independently: 2 × the flattened input; records its batches."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        self.batches.append(len(batch))
        return (2 * batch.reshape(len(batch), -1)).numpy()


def test_model_stage_batches_whole_chunks_across_videos_and_encodes_each_row():
    encoder = DoublingEncoder()
    stage = ModelStage("clip", encoder, device=torch.device("cpu"), batch_rows=64)
    rng = np.random.default_rng(0)
    sizes = [(0, 0, 30), (1, 0, 30), (0, 1, 10), (2, 0, 64)]  # (video, chunk number, rows)
    sent = {}
    out: list[ChunkMessage] = []
    for index, chunk_no, n in sizes:
        data = torch.from_numpy(rng.standard_normal((n, 3)).astype(np.float32))
        sent[(index, chunk_no)] = data.numpy().copy()
        out += stage.process(ChunkMessage(index, chunk_no, Chunk("clip", np.arange(n) * 0.5, None, data, False)))
    out += stage.flush()
    # 30 + 30 fit a batch of 64; 10 more would not: that batch goes; then 10 + 64 > 64: 10 alone, then 64 (full)
    assert encoder.batches == [60, 10, 64]
    assert [(m.index, m.chunk_no) for m in out] == [(i, c) for i, c, _ in sizes]
    for message in out:
        assert message.chunk.encoded
        np.testing.assert_array_equal(message.chunk.data, 2 * sent[(message.index, message.chunk_no)])
        np.testing.assert_array_equal(message.chunk.times_s, np.arange(len(message.chunk.data)) * 0.5)


def test_model_stage_counts_s3d_frames_and_drops_a_dead_videos_chunks():
    windows = Chunk("s3d", np.zeros(2), np.ones(2), torch.zeros(2, 16, 3), False)  # 2 windows of 16 frames
    assert rows_in("s3d", windows) == 32 and rows_in("clip", windows) == 2
    encoder = DoublingEncoder()
    stage = ModelStage("s3d", encoder, device=torch.device("cpu"), batch_rows=64)
    assert stage.process(ChunkMessage(0, 0, windows)) == []
    assert stage.process(ChunkMessage(1, 0, windows)) != []  # 64 frames: a full batch
    stage.process(ChunkMessage(2, 0, windows))
    stage.drop(2)
    assert stage.flush() == [] and encoder.batches == [4]


def test_assemble_stage_orders_repeats_and_spills_rows_whatever_the_arrival_order(tmp_path):
    stage = AssembleStage(spill_dir=tmp_path / "spill", spill_prefix="k0of1")
    stage.expect(task(0, ("clip", "flow", "audio")))
    clip0 = Chunk("clip", np.array([0.0, 1.0]), None, np.array([[1.0], [2.0]]), True, np.array([1, 2]))
    clip1 = Chunk("clip", np.array([3.0]), None, np.array([[3.0]]), True, np.array([1]))
    flow = [Chunk("flow", np.array([t]), np.array([t + 0.1]), np.full((1, 4), t, np.uint8), True) for t in (0, 1)]
    info = {"decoded_frames": 7, "thumbnail_jpeg": b"jpeg"}
    outcomes = {"clip": ("done", None), "flow": ("done", None), "audio": ("absent", "no audio stream")}
    assert stage.process(ChunkMessage(0, 1, flow[0])) == []
    assert stage.process(ChunkMessage(0, 2, clip1)) == []  # model rows before the earlier chunk's
    assert stage.process(ChunkMessage(0, 3, flow[1])) == []
    assert stage.process(VideoDecoded(0, 4, outcomes, info, 0.5)) == []  # chunk 0 still missing
    assert list((tmp_path / "spill").iterdir())  # flow rows wait on disk
    with pytest.raises(ValueError, match="flow chunk 1 of video 0 after chunk 3"):  # appended: must come in order
        stage.process(ChunkMessage(0, 1, flow[0]))
    (video,) = stage.process(ChunkMessage(0, 0, clip0))
    assert isinstance(video, VideoRows) and len(stage) == 0
    features, times, ends = video.rows["clip"]
    np.testing.assert_array_equal(features, [[1.0], [2.0], [2.0], [3.0]])  # row k repeated repeats[k] times
    np.testing.assert_array_equal(times, [0.0, 1.0, 1.0, 3.0])
    assert ends is None
    flow_rows, _, flow_ends = video.rows["flow"]
    np.testing.assert_array_equal(flow_rows, np.stack([np.zeros(4, np.uint8), np.ones(4, np.uint8)]))
    np.testing.assert_array_equal(flow_ends, [0.1, 1.1])
    assert video.absent == {"audio": "no audio stream"} and video.failed == {}
    assert json.loads(video.info_json) == {"decoded_frames": 7}  # the thumbnail is a file, not catalog JSON
    video.close()
    assert not list((tmp_path / "spill").iterdir())


def test_assemble_stage_fails_every_view_of_a_crashed_or_stuck_video(tmp_path):
    stage = AssembleStage(spill_dir=tmp_path, spill_prefix="k0of1")
    stage.expect(task(0, ("clip", "audio")))
    stage.expect(task(1, ("clip",), video_id="w"))
    stage.process(ChunkMessage(0, 0, Chunk("clip", np.zeros(1), None, torch.zeros(1, 3), False)))
    failed = {"clip": ("failed", "unexpected ValueError: bad"), "audio": ("failed", "unexpected ValueError: bad")}
    (crashed,) = stage.process(VideoDecoded(0, None, failed, {}, 0.1))
    assert crashed.rows == {} and crashed.failed == {view: "unexpected ValueError: bad" for view in ("clip", "audio")}
    (stuck,) = stage.fail(1, "decode stuck")
    assert stuck.failed == {"clip": "decode stuck"} and stuck.video_id == "w"
    assert stage.process(VideoDecoded(1, 0, {}, {}, 0.1)) == []  # later messages of a given-up video: ignored


class MeanRed(Consumer):
    """Records, at 2 samples per second, the mean red value of the frame on screen."""

    view_names = ("probe",)

    def targets_s(self, origin_s, end_s, nominal_dt_s, *, frame_origin_s=None):
        return np.arange(origin_s, end_s, 0.5)

    def feed(self, rgb, time_s, indices):
        value = float(rgb[..., 0].mean())
        return [Chunk("probe", np.full(len(indices), time_s), None, np.full((len(indices), 1), value), True)]


def test_decode_stage_sends_each_sampled_frame_then_the_video_outcome(tmp_path):
    fps = 12
    path = write_video(
        tmp_path / "ramp.mp4", 36, fps=fps, width=64, height=48, gop=6,
        frame_fn=lambda i, _: np.full((48, 64, 3), 10 + 6 * i, np.uint8),
    )  # fmt: skip
    stage = DecodeStage(lambda views: [MeanRed()], run=RunConfig())
    job = VideoTask(3, VideoEntry(path=str(path), video_id="ramp"), None, ("probe",))
    messages = list(stage.process(job))
    *chunks, decoded = messages
    assert isinstance(decoded, VideoDecoded) and decoded.index == 3 and decoded.n_chunks == len(chunks)
    assert decoded.outcomes == {"probe": ("done", None)} and decoded.info["decoded_frames"] >= 31
    assert [m.chunk_no for m in chunks] == list(range(len(chunks)))
    times = np.concatenate([m.chunk.times_s for m in chunks])
    values = np.concatenate([m.chunk.data[:, 0] for m in chunks])
    np.testing.assert_allclose(times, np.arange(0, 3, 0.5))  # frame k is shown from k / 12 s
    expected = 10 + 6 * np.round(times * fps)  # the frame on screen at each sample time
    np.testing.assert_allclose(values, expected, atol=3)  # x264 at this size keeps a flat grey within 3

    def broken(views):
        raise ValueError("no consumer")

    (crashed,) = list(DecodeStage(broken, run=RunConfig()).process(job))
    assert crashed.n_chunks is None and crashed.outcomes["probe"][0] == "failed"
    assert "ValueError: no consumer" in crashed.outcomes["probe"][1]


@pytest.fixture
def writer(tmp_path):
    catalog = Catalog.open(tmp_path, create=True)
    catalog.claim_view("clip", {"feature_dim": 2})
    writer = CacheWriter(
        tmp_path, catalog, run_id="r", writer_tag="k0of1", root_attrs={}, view_attrs={"clip": {"feature_dim": 2}},
        dtypes={"clip": "float16"},
    )  # fmt: skip
    yield writer
    catalog.close()


def test_write_stage_writes_rows_records_failures_and_counts_them(tmp_path, writer):
    summary = ExtractSummary(total=2)
    stage = WriteStage(tmp_path, writer, summary)
    rows = np.array([[0.5, 1.0], [1.5, -2.0], [3.0, 4.0]], np.float32)
    source = SourceStat(10, 20)
    good = VideoRows(
        VideoTask(0, VideoEntry(path="a.mp4", video_id="a"), source, ("clip", "audio")),
        {"clip": (rows, np.array([0.0, 1.0, 2.0]), None)}, {}, {"audio": "no audio stream"}, "{}",
    )  # fmt: skip
    bad = VideoRows(task(1, ("clip",), video_id="b"), {}, {"clip": "cannot open"}, {}, "{}")
    stage.process(good)
    stage.process(bad)
    writer.commit()
    assert (summary.extracted, summary.failed, summary.rows, summary.frames) == (1, 1, {"clip": 3}, 3)
    assert summary.absent == {"audio": 1} and summary.failures == {"b": "cannot open"}
    item = writer.catalog.item("a", "clip")
    assert (item.status, item.row_count, item.source_size) == ("done", 3, 10)
    assert writer.catalog.item("a", "audio").status == "absent"
    failed = writer.catalog.item("b", "clip")
    assert (failed.status, failed.reason) == ("failed", "cannot open")
    with Cache(tmp_path) as cache:
        read, times = cache.read("a", "clip")
        np.testing.assert_array_equal(read, rows.astype(np.float16))
        np.testing.assert_array_equal(times, [0.0, 1.0, 2.0])


class ScanAllAssemble(AssembleStage):
    """The brute-force twin: `ready()` looks at every video in flight (the code before issue 29)."""

    def ready(self) -> list[VideoRows]:
        self._touched.clear()
        done = [index for index, state in self.states.items() if state.complete]
        return [self._rows(self.states.pop(index)) for index in done]


@pytest.mark.parametrize("seed", range(6))
def test_assemble_ready_equals_a_scan_of_every_video_and_looks_only_at_changed_ones(tmp_path, seed, monkeypatch):
    """Random arrival orders of model inputs, encoded rows, decode-done messages, crashes and stuck
    decoders, with and without hand-over per message: the same videos come out at the same calls, in
    the same order, as from a stage that scans every video; and `ready()` examines only the videos
    changed since its last call, so a run's cost does not grow with its to-do list."""
    rng = np.random.default_rng(seed)
    n_videos = 40
    fast, twin = (
        cls(spill_dir=tmp_path / cls.__name__, spill_prefix="k0of1") for cls in (AssembleStage, ScanAllAssemble)
    )
    messages = []
    for index in range(n_videos):
        for stage in (fast, twin):
            stage.expect(task(index, ("clip",), video_id=f"v{index}"))
        n_chunks = int(rng.integers(0, 3))
        for chunk_no in range(n_chunks):
            rows = torch.full((1, 2), float(index))
            messages.append(ChunkMessage(index, chunk_no, Chunk("clip", np.zeros(1), None, rows, False)))
            encoded = Chunk("clip", np.zeros(1), None, rows.numpy() * 2, True)
            messages.append(ChunkMessage(index, chunk_no, encoded))
        crashed = rng.random() < 0.1
        outcomes = {"clip": ("failed", "crash")} if crashed else {"clip": ("done", None)}
        messages.append(VideoDecoded(index, None if crashed else n_chunks, outcomes, {}, 0.0))
    order = rng.permutation(len(messages))
    examined = []
    complete = type(fast.states[0]).complete
    monkeypatch.setattr(type(fast.states[0]), "complete", property(lambda s: examined.append(1) or complete.fget(s)))
    stuck = set(rng.choice(n_videos, 3, replace=False).tolist())
    for step, i in enumerate(order):
        message = messages[i]
        hand_over = bool(rng.random() < 0.7)
        got = [v.video_id for v in (fast.process(message, hand_over=hand_over))]
        want = [v.video_id for v in (twin.process(message, hand_over=hand_over))]
        assert got == want, (seed, step)
        if not hand_over or step % 7 == 0:
            examined.clear()
            changed = len(fast._touched)
            got = [v.video_id for v in fast.ready()]
            assert len(examined) <= changed  # only the changed videos, never the whole to-do list
            assert got == [v.video_id for v in twin.ready()]
        if step == len(order) // 2:
            for index in sorted(stuck):
                assert [v.video_id for v in fast.fail(index, "stuck")] == [
                    v.video_id for v in twin.fail(index, "stuck")
                ]
    assert len(fast) == len(twin) == 0
