"""The MJPEG camera server renders the emulated scene, and OpenCV opens its streams like an IP camera's."""

import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from sim.emulators.camera_server import MjpegCameraServer
from sim.emulators.feetech import BusFaults, FeetechBusEmulator, SceneMirror
from sim.mujoco.so101.model import REST_KEYFRAME, load_model


@pytest.fixture(scope="module")
def scene():
    with (
        FeetechBusEmulator() as emulator,
        MjpegCameraServer(emulator.scene_name, width=64, height=48, fps=20) as server,
    ):
        yield emulator, server


def capture(url):
    return cv2.VideoCapture(
        url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    )


def read_frames(url, count):
    stream = capture(url)
    try:
        assert stream.isOpened(), f"OpenCV could not open {url}"
        frames = []
        for _ in range(count):
            ok, frame = stream.read()
            assert ok
            frames.append(frame)
        return frames
    finally:
        stream.release()


def test_opencv_opens_each_camera_stream(scene):
    _, server = scene
    for camera in ("front", "wrist"):
        url = server.url(camera)
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"/{camera}.mjpg")
        frames = read_frames(url, 3)
        assert all(frame.shape == (48, 64, 3) for frame in frames)
        assert frames[-1].std() > 10, "frames should show the scene"


def test_frames_follow_the_emulated_scene(scene):
    emulator, server = scene
    model = load_model()
    rest = model.key(REST_KEYFRAME).qpos.copy()
    emulator.set_qpos(rest)
    before = read_frames(server.url("front"), 2)[-1].astype(float)
    moved = rest.copy()
    moved[:3] = [0.15, -0.05, 0.0125]  # the block, 15 cm closer to the camera's left
    emulator.set_qpos(moved)
    np.testing.assert_allclose(emulator.qpos()[:3], moved[:3], atol=1e-3)
    after = read_frames(server.url("front"), 2)[-1].astype(float)
    assert np.abs(after - before).mean() > 1.0


def test_frames_match_the_sim_envs_rendering_of_the_same_state(scene):
    from sim.mujoco.so101.env import So101BatchedEnv

    emulator, server = scene
    rest = load_model().key(REST_KEYFRAME).qpos.copy()  # the arm rests on its stops: it stays put
    emulator.set_qpos(rest)
    streamed = cv2.cvtColor(read_frames(server.url("front"), 3)[-1], cv2.COLOR_BGR2RGB).astype(float)
    env = So101BatchedEnv(num_envs=1, cameras=("front",), image_size=48, render_workers=0)
    try:
        env.reset(seed=0)
        env.sim.set_env(0, rest)
        rendered = env.renderer.render()["front"][0]
    finally:
        env.close()
    # The server's 64 x 48 frame is the env's 48 x 48 view widened (same vertical field of view).
    centre = streamed[:, 8:56]
    assert np.abs(centre - rendered).mean() < 4.0  # JPEG artefacts only


def test_snapshot_and_unknown_paths(scene):
    _, server = scene
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/wrist.jpg", timeout=10) as reply:
        assert reply.headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3)
    with pytest.raises(urllib.error.HTTPError, match="404") as error:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/top.mjpg", timeout=10)
    assert b"/front.mjpg" in error.value.read()


def test_dropout_withholds_frames(scene):
    _, server = scene
    server.dropout = True
    try:
        time.sleep(0.1)
        rendered = server.counts["frames_rendered"]
        time.sleep(0.3)
        assert server.counts["frames_rendered"] == rendered
    finally:
        server.dropout = False
    time.sleep(0.3)
    assert server.counts["frames_rendered"] > rendered


def test_scene_mirror_gives_consistent_copies():
    mirror = SceneMirror(3)
    try:
        reader = SceneMirror(3, mirror.name)
        assert reader.read()[1] == 0.0
        mirror.write(np.array([1.0, 2.0, 3.0]), 0.5)
        qpos, time_s = reader.read()
        np.testing.assert_array_equal(qpos, [1.0, 2.0, 3.0])
        assert time_s == 0.5
        reader.close()
    finally:
        mirror.close()
    with pytest.raises(ValueError, match="nq"):
        SceneMirror(0)


def test_inject_says_when_the_emulator_applied_the_faults(scene):
    emulator, _ = scene
    before = time.monotonic()
    applied_at = emulator.inject(BusFaults(latency_s=0.01))
    assert before <= applied_at <= time.monotonic()
    assert emulator.faults == BusFaults(latency_s=0.01)
    emulator.faults = BusFaults()


def test_set_qpos_is_validated(scene):
    emulator, _ = scene
    with pytest.raises(ValueError, match="shape"):
        emulator.set_qpos(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        emulator.set_qpos(np.full(load_model().nq, np.nan))


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"cameras": ("top",)}, "unknown camera"),
        ({"width": 8}, "width"),
        ({"fps": 0.0}, "fps"),
        ({"port": 70000}, "port"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_settings_are_validated(settings, match):
    with pytest.raises(ValueError, match=match):
        MjpegCameraServer("unused", **settings)


def test_url_and_port_need_a_running_server():
    server = MjpegCameraServer("unused")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    with pytest.raises(ValueError, match="unknown camera"):
        server.url("top")
