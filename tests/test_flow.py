"""Optical flow: TV-L1 against OpenCV called directly, known motions, RAFT on CPU, uint8 storage,
and the motion descriptor against a brute-force loop."""

from __future__ import annotations

import math
import sys
import threading
import types

import cv2
import numpy as np
import pytest
import torch

from vidcache.errors import ConfigError, MissingWeightsError
from vidcache.extract.views.flow import FlowConfig
from vidcache.extract.views.flow.methods import (
    FLOW_METHODS,
    FlowMethod,
    dequantize_flow,
    descriptor_layout,
    motion_descriptor,
    quantize_flow,
)

H, W = 64, 80
CPU = torch.device("cpu")
ORIENTATIONS = 8


def texture(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Smooth random RGB texture (noise blurred by sigma 2 px, contrast-stretched): TV-L1 can track it.
    The blur is periodic (FFT), so a wrapping np.roll of it has no seam."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    gaussian = np.exp(-2 * (math.pi * 2.0) ** 2 * (fy**2 + fx**2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * gaussian[..., None], axes=(0, 1)))
    smooth = (smooth - smooth.mean()) / smooth.std()
    return np.clip(128 + 40 * smooth, 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moved right by dx and down by dy (wrapping): image(y, x) = result(y + dy, x + dx)."""
    return np.roll(image, (dy, dx), axis=(0, 1))


def make(method: str, **config) -> FlowMethod:
    return FLOW_METHODS.create(method, config=FlowConfig(method=method, **config), device=CPU, allow_download=False)


@pytest.fixture(scope="module")
def tvl1() -> FlowMethod:
    return make("tvl1")


# registry -----------------------------------------------------------------------------------------
def test_registry_lists_both_methods_and_names_the_option_for_unknown_ones():
    assert FLOW_METHODS.names() == ["raft", "tvl1"]
    with pytest.raises(ConfigError, match="--flow-method 'farneback'"):
        FLOW_METHODS.create("farneback", config=FlowConfig(), device=CPU, allow_download=False)


# TV-L1 --------------------------------------------------------------------------------------------
def test_tvl1_equals_opencv_called_directly(tvl1):
    first = np.stack([texture(1), texture(2)])
    second = np.stack([shifted(texture(1), 2, 1), shifted(texture(2), -1, 2)])
    ours = tvl1.compute(first, second)
    assert ours.shape == (2, 2, H, W) and ours.dtype == np.float32
    for i in range(2):
        gray1 = cv2.cvtColor(first[i], cv2.COLOR_RGB2GRAY)
        gray2 = cv2.cvtColor(second[i], cv2.COLOR_RGB2GRAY)
        reference = cv2.optflow.DualTVL1OpticalFlow_create().calc(gray1, gray2, None)  # [H, W, 2]
        np.testing.assert_allclose(ours[i, 0], reference[..., 0], rtol=0, atol=1e-5)  # dx
        np.testing.assert_allclose(ours[i, 1], reference[..., 1], rtol=0, atol=1e-5)  # dy


def test_tvl1_recovers_a_known_shift(tvl1):
    image = texture(3)
    flow = tvl1.compute(image[None], shifted(image, 2, 1)[None])[0]
    interior = flow[:, 8:-8, 8:-8]  # np.roll wraps: the borders see a seam
    mean_dx, mean_dy = interior[0].mean(), interior[1].mean()
    assert mean_dx == pytest.approx(2.0, rel=0.15)
    assert mean_dy == pytest.approx(1.0, rel=0.15)


def test_tvl1_identity_records_opencv_defaults(tvl1):
    identity = tvl1.identity()
    fresh = cv2.optflow.DualTVL1OpticalFlow_create()
    params = identity["parameters"]
    assert identity["method"] == "tvl1"
    assert params["tau"] == pytest.approx(fresh.getTau())
    assert params["lambda"] == pytest.approx(fresh.getLambda())
    assert params["theta"] == pytest.approx(fresh.getTheta())
    assert params["scales"] == fresh.getScalesNumber()
    assert params["warps"] == fresh.getWarpingsNumber()
    assert params["epsilon"] == pytest.approx(fresh.getEpsilon())
    assert params["inner_iterations"] == fresh.getInnerIterations()
    assert params["outer_iterations"] == fresh.getOuterIterations()
    assert params["scale_step"] == pytest.approx(fresh.getScaleStep())
    assert params["gamma"] == pytest.approx(fresh.getGamma())
    assert params["median_filtering"] == fresh.getMedianFiltering()
    assert params["use_initial_flow"] is False


def test_tvl1_is_thread_safe(tvl1):
    pairs = [
        (np.stack([texture(10)]), np.stack([shifted(texture(10), 2, 0)])),
        (np.stack([texture(11)]), np.stack([shifted(texture(11), 0, -2)])),
    ]
    serial = [tvl1.compute(a, b) for a, b in pairs]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def work(k: int) -> None:
        barrier.wait()
        for _ in range(3):
            results[k].append(tvl1.compute(*pairs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(2):
        assert len(results[k]) == 3
        for flow in results[k]:
            np.testing.assert_array_equal(flow, serial[k])


def test_tvl1_without_opencv_contrib_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))  # plain OpenCV: no cv2.optflow
    with pytest.raises(ConfigError, match=r"opencv-contrib-python-headless"):
        make("tvl1")


def test_compute_rejects_mismatched_frames(tvl1):
    with pytest.raises(ValueError, match="shape"):
        tvl1.compute(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tvl1.compute(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32))


# motion descriptor --------------------------------------------------------------------------------
def reference_descriptor(flow: np.ndarray, grid: int, orientations: int, edges: tuple[float, ...]) -> np.ndarray:
    """Brute force, one pixel at a time, with its own cell boundaries (no numpy.array_split)."""
    n, _, h, w = flow.shape

    def bounds(size: int) -> list[tuple[int, int]]:
        out, start = [], 0
        for i in range(grid):
            length = size // grid + (1 if i < size % grid else 0)
            out.append((start, start + length))
            start += length
        return out

    per_cell = 1 + orientations * len(edges)
    result = np.zeros((n, grid * grid * per_cell), np.float64)
    for k in range(n):
        for r, (y0, y1) in enumerate(bounds(h)):
            for c, (x0, x1) in enumerate(bounds(w)):
                hist = [0.0] * per_cell
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        dx, dy = float(flow[k, 0, y, x]), float(flow[k, 1, y, x])
                        m = math.hypot(dx, dy)
                        if m < edges[0]:
                            hist[0] += 1
                            continue
                        angle = math.atan2(dy, dx) % (2 * math.pi)
                        width = 2 * math.pi / orientations
                        o = math.floor((angle + width / 2) / width) % orientations
                        mag = max(i for i, e in enumerate(edges) if m >= e)
                        hist[1 + o * len(edges) + mag] += 1
                count = (y1 - y0) * (x1 - x0)
                start = (r * grid + c) * per_cell
                result[k, start : start + per_cell] = [v / count for v in hist]
    return result.astype(np.float32)


def test_motion_descriptor_matches_brute_force():
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 4, size=(2, 2, 10, 13)).astype(np.float32)
    flow[:, :, ::3, ::2] *= 0.02  # plenty of static pixels
    # exact directions and magnitudes on edges
    flow[0, :, 0, 0] = (3.0, 0.0)
    flow[0, :, 0, 1] = (-3.0, 0.0)
    flow[0, :, 0, 2] = (0.0, 3.0)
    flow[0, :, 0, 3] = (0.0, -1.0)
    flow[0, :, 0, 4] = (8.0, 0.0)
    flow[0, :, 0, 5] = (0.25, 0.0)
    flow[0, :, 0, 6] = (0.0, 0.0)
    edges = (0.25, 1.0, 3.0, 8.0)
    ours = motion_descriptor(flow, grid=3, orientations=ORIENTATIONS, magnitude_edges_px=edges)
    reference = reference_descriptor(flow, 3, ORIENTATIONS, edges)
    assert ours.shape == (2, 3 * 3 * (1 + ORIENTATIONS * 4)) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.reshape(2, 9, -1).sum(-1), 1.0, atol=1e-6)
    layout = descriptor_layout(3, ORIENTATIONS, 4)
    assert layout["dim"] == ours.shape[1] and len(layout["bins"]) == 1 + ORIENTATIONS * 4
    assert layout["bins"][0] == "static"


def dominant_bin(descriptor: np.ndarray, grid: int, orientations: int, n_mag: int) -> tuple[int, int]:
    """(orientation, magnitude bin) holding the most moving pixels over all cells."""
    moving = descriptor.reshape(grid * grid, 1 + orientations * n_mag)[:, 1:].sum(0)
    o, m = divmod(int(np.argmax(moving)), n_mag)
    return o, m


def magnitude_bin_of(value: float, edges: tuple[float, ...]) -> int:
    return sum(value >= e for e in edges) - 1


@pytest.mark.parametrize(
    ("dx", "dy", "orientation"),
    [(3, 0, 0), (-3, 0, ORIENTATIONS // 2), (0, 3, ORIENTATIONS // 4)],
    ids=["right", "left", "down"],
)
def test_constant_flow_lands_in_the_expected_bin(dx, dy, orientation):
    edges = FlowConfig().motion_magnitude_edges_px  # 3.0 sits on an edge: [3, 8) is its bin exactly
    flow = np.zeros((1, 2, 16, 20), np.float32)
    flow[0, 0], flow[0, 1] = dx, dy
    descriptor = motion_descriptor(flow, grid=4, orientations=ORIENTATIONS, magnitude_edges_px=edges)[0]
    per_cell = descriptor.reshape(16, -1)
    expected = 1 + orientation * len(edges) + magnitude_bin_of(3.0, edges)
    np.testing.assert_array_equal(per_cell[:, expected], 1.0)


@pytest.mark.parametrize(
    ("dx", "dy", "orientation"),
    [(3, 0, 0), (-3, 0, ORIENTATIONS // 2), (0, 3, ORIENTATIONS // 4)],
    ids=["right", "left", "down"],
)
def test_motion_descriptor_of_tvl1_flow_of_a_shift(tvl1, dx, dy, orientation):
    # Edges with 3 px mid-bin: an estimate of 2.98 must not flip the answer at the [1, 3) | [3, 8) edge.
    edges = (0.25, 1.0, 2.0, 5.0)
    image = texture(4)
    flow = tvl1.compute(image[None], shifted(image, dx, dy)[None])
    descriptor = motion_descriptor(flow, grid=4, orientations=ORIENTATIONS, magnitude_edges_px=edges)[0]
    assert dominant_bin(descriptor, 4, ORIENTATIONS, len(edges)) == (orientation, magnitude_bin_of(3.0, edges))


# quantisation -------------------------------------------------------------------------------------
def test_quantisation_round_trip_clip_and_zero():
    bound = 20.0
    rng = np.random.default_rng(0)
    flow = rng.uniform(-bound, bound, size=(3, 2, 17, 19)).astype(np.float32)
    q = quantize_flow(flow, bound)
    assert q.dtype == np.uint8 and q.shape == flow.shape
    assert q.min() >= 1
    error = np.abs(dequantize_flow(q, bound) - flow)
    assert error.max() <= bound / 127
    assert error.max() <= bound / 254 + 1e-5
    assert dequantize_flow(q, bound).dtype == np.float32

    extremes = np.array([0.0, bound, -bound, 3 * bound, -1e6, np.inf, -np.inf], np.float32)
    qe = quantize_flow(extremes, bound)
    assert qe.tolist() == [128, 255, 1, 255, 1, 255, 1]
    np.testing.assert_allclose(dequantize_flow(qe, bound), [0, bound, -bound, bound, -bound, bound, -bound])
    with pytest.raises(ValueError, match="NaN"):
        quantize_flow(np.array([np.nan], np.float32), bound)


# RAFT ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raft_random() -> FlowMethod:
    return make("raft", raft_model="small", weights="none", seed=0)


def rgb_pairs(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    first = np.stack([texture(seed + i, h, w) for i in range(n)])
    second = np.stack([shifted(frame, 2, 1) for frame in first])
    return first, second


def test_raft_random_weights_pad_and_crop(raft_random):
    first, second = rgb_pairs(2, 36, 52, seed=20)  # not multiples of 8, below RAFT's 128 minimum
    flow = raft_random.compute(first, second)
    assert flow.shape == (2, 2, 36, 52) and flow.dtype == np.float32
    assert np.isfinite(flow).all()

    # independently: edge-pad with numpy to 128 × 128 (evenly), run torchvision's model through the
    # weights' transforms, crop back
    from torchvision.models.optical_flow import Raft_Small_Weights

    pad = ((0, 0), (46, 46), (38, 38), (0, 0))
    padded = [torch.from_numpy(np.pad(x, pad, mode="edge")).permute(0, 3, 1, 2) for x in (first, second)]
    img1, img2 = Raft_Small_Weights.C_T_V2.transforms()(*padded)
    with torch.inference_mode():
        reference = raft_random.model(img1, img2, num_flow_updates=12)[-1][:, :, 46:82, 38:90].numpy()
    np.testing.assert_allclose(flow, reference, rtol=0, atol=1e-6)

    identity = raft_random.identity()
    assert identity["weights_kind"] == "random" and identity["random_init_seed"] == 0
    assert identity["num_flow_updates"] == 12 and identity["raft_model"] == "small"

    again = make("raft", raft_model="small", weights="none", seed=0)
    assert again.identity()["weights_sha256"] == identity["weights_sha256"]
    np.testing.assert_array_equal(again.compute(first, second), flow)
    other = make("raft", raft_model="small", weights="none", seed=1)
    assert other.identity()["weights_sha256"] != identity["weights_sha256"]


def test_raft_matches_torchvision_called_directly(raft_random):
    """At a size RAFT takes as is (multiple of 8, >= 128) there is no padding: the numbers must equal
    torchvision's model fed through the weights' own transforms."""
    from torchvision.models.optical_flow import Raft_Small_Weights

    first, second = rgb_pairs(1, 128, 136, seed=30)
    ours = raft_random.compute(first, second)
    transforms = Raft_Small_Weights.C_T_V2.transforms()
    img1, img2 = transforms(torch.from_numpy(first).permute(0, 3, 1, 2), torch.from_numpy(second).permute(0, 3, 1, 2))
    with torch.inference_mode():
        reference = raft_random.model(img1, img2, num_flow_updates=12)[-1].numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_raft_loads_a_weights_file(raft_random, tmp_path, suffix):
    from safetensors.torch import save_file

    from vidcache.extract.weights import sha256_file

    path = tmp_path / f"raft_small{suffix}"
    state = {k: v.contiguous() for k, v in raft_random.model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = make("raft", raft_model="small", weights=str(path), seed=99)  # seed unused with a file
    identity = loaded.identity()
    assert identity["weights_kind"] == "file" and identity["random_init_seed"] is None
    assert identity["weights_sha256"] == sha256_file(path)
    first, second = rgb_pairs(1, 36, 52, seed=40)
    np.testing.assert_array_equal(loaded.compute(first, second), raft_random.compute(first, second))


def test_raft_default_weights_missing_names_the_file_and_the_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as caught:
        make("raft", raft_model="small", weights="default")
    message = str(caught.value)
    assert "raft_small_C_T_V2-01064c6d.pth" in message
    assert "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth" in message
    assert str(tmp_path) in message
    for fix in ("--flow-weights PATH", "--flow-weights none", "--flow-method tvl1", "--download"):
        assert fix in message
    assert "\n" not in message


def test_raft_missing_weights_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        make("raft", weights=str(tmp_path / "nope.pth"))
