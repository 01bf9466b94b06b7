import time

import cv2
import numpy as np
import pytest

from real.cameras import CameraClosedError, CameraError, OpenCVCamera, StaleFrameError, parse_source
from sim.emulators.camera_server import MjpegCameraServer
from sim.emulators.feetech import FeetechBusEmulator


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for _ in range(10):
        writer.write(np.full((24, 32, 3), (255, 0, 0), np.uint8))  # BGR blue
    writer.release()
    return path


def test_sources_are_parsed_and_validated(video):
    assert parse_source(0) == 0 and parse_source("2") == 2
    assert parse_source("http://127.0.0.1:8080/front.mjpg") == "http://127.0.0.1:8080/front.mjpg"
    assert parse_source(video) == str(video)
    for bad, match in [
        (-1, ">= 0"),
        (True, "device index"),
        ("ftp://host/x", "schemes"),
        ("http:///front.mjpg", "host"),
        ("/no/such/file.mp4", "neither"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_source(bad)
    with pytest.raises(ValueError, match="max_age_s"):
        OpenCVCamera(video, max_age_s=0.0)


def test_a_file_plays_then_closes(video):
    camera = OpenCVCamera(video, name="clip")
    with pytest.raises(CameraClosedError, match="not connected"):
        camera.read_latest()
    with camera:
        frame = camera.read_latest()
        assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
        assert frame.image[..., 2].mean() > 200 and frame.image[..., 0].mean() < 50  # RGB: blue last

        def ended():
            try:
                camera.read_latest()
            except CameraClosedError as error:
                assert "end of file" in str(error)
                return True
            return False

        wait_for(ended, timeout=5.0)  # 10 frames at 25 fps
    with pytest.raises(CameraClosedError, match="disconnected"):
        camera.read_latest()


def test_an_unreachable_stream_fails_to_connect():
    camera = OpenCVCamera("http://127.0.0.1:9/none.mjpg", open_timeout_s=1.0)
    with pytest.raises(CameraError, match="could not open"):
        camera.connect()


@pytest.mark.slow
def test_a_stream_goes_stale_during_a_dropout_and_recovers():
    with (
        FeetechBusEmulator() as emulator,
        MjpegCameraServer(emulator.scene_name, width=32, height=32, fps=20) as server,
    ):
        camera = OpenCVCamera(server.url("front"), "front", max_age_s=0.3, read_timeout_s=0.5)
        with camera:
            first = camera.read_latest()
            wait_for(lambda: camera.read_latest().index > first.index)
            server.dropout = True
            time.sleep(0.5)
            with pytest.raises(StaleFrameError, match=r"front: newest frame is \d+ ms old"):
                camera.read_latest()
            server.dropout = False

            def fresh():
                try:
                    return camera.read_latest().index > first.index
                except StaleFrameError:
                    return False

            wait_for(fresh)
            assert camera.reopens >= 1
