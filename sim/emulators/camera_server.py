"""IP cameras of an emulated MuJoCo scene: MJPEG over HTTP, which OpenCV's ``VideoCapture`` opens by URL.

`MjpegCameraServer` runs in a process of its own (as a camera is a device of its own: rendering never
takes the interpreter lock of the driver or of the servo-bus emulator). It reads the scene's joint
positions from the shared-memory mirror the servo-bus emulator writes (`sim.emulators.feetech.SceneMirror`),
renders each camera of the model at a fixed rate, and serves:

- ``/<camera>.mjpg``: an endless ``multipart/x-mixed-replace`` stream of JPEG frames (an IP camera);
- ``/<camera>.jpg``: the latest frame as one JPEG.

It binds to 127.0.0.1 unless told otherwise; port 0 picks a free port (`MjpegCameraServer.port`). A
camera dropout (`MjpegCameraServer.dropout`) stops new frames while connections stay open, as a camera
that hangs does. Rendering is cheap: no shadows, reflections or multisampling.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from sim.emulators.feetech import SceneMirror
from sim.emulators.process import DeviceProcess
from sim.mujoco.so101.model import CAMERAS, load_model

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
BOUNDARY = "frame"
CLIENT_WAIT_S = 0.5  # how often a streaming connection looks whether the server is closing


class _Stream:
    """The latest JPEG of one camera, and a condition that wakes the connections streaming it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._jpeg: bytes | None = None
        self._sequence = 0
        self.closed = False

    def publish(self, jpeg: bytes) -> None:
        with self._condition:
            self._jpeg, self._sequence = jpeg, self._sequence + 1
            self._condition.notify_all()

    @property
    def sequence(self) -> int:
        """The number of frames published so far."""
        with self._condition:
            return self._sequence

    def next_after(self, sequence: int, timeout: float) -> tuple[int, bytes] | None:
        """The first frame newer than ``sequence``, waiting up to ``timeout``; None on timeout or close."""
        with self._condition:
            self._condition.wait_for(lambda: self.closed or self._sequence > sequence, timeout)
            if self.closed or self._sequence <= sequence or self._jpeg is None:
                return None
            return self._sequence, self._jpeg

    def close(self) -> None:
        with self._condition:
            self.closed = True
            self._condition.notify_all()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/<camera>.mjpg`` and ``/<camera>.jpg`` from the server's streams."""

    server: _CameraHTTPServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        name, _, kind = urlsplit(self.path).path.lstrip("/").rpartition(".")
        stream = self.server.streams.get(name)
        if stream is None or kind not in ("mjpg", "jpg"):
            paths = ", ".join(f"/{camera}.mjpg" for camera in self.server.streams)
            self.send_error(404, f"no such camera stream; this server has {paths} (and .jpg snapshots)")
            return
        if kind == "jpg":
            self._send_snapshot(stream)
        else:
            self._send_stream(stream)

    def _send_snapshot(self, stream: _Stream) -> None:
        frame = stream.next_after(0, CLIENT_WAIT_S * 4)
        if frame is None:
            self.send_error(503, "no frame yet (camera dropout or server closing)")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(frame[1])))
        self.end_headers()
        self.wfile.write(frame[1])

    def _send_stream(self, stream: _Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        sequence = stream.sequence  # a new client gets new frames only, never one rendered before it came
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while not stream.closed:
                frame = stream.next_after(sequence, CLIENT_WAIT_S)
                if frame is None:
                    continue
                sequence, jpeg = frame
                header = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(header.encode() + jpeg + b"\r\n")
                self.wfile.flush()
                self.server.count("frames_sent")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("camera server: " + format, *args)


class _CameraHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], streams: dict[str, _Stream]) -> None:
        super().__init__(address, _Handler)
        self.streams = streams
        self.counts: dict[str, int] = {"frames_rendered": 0, "frames_sent": 0}
        self._lock = threading.Lock()

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


class MjpegCameraServer:
    """MJPEG cameras of the SO-101 scene mirrored by a running `FeetechBusEmulator`, in their own process.

    Use it as a context manager (or call `start` and `close`)::

        with FeetechBusEmulator() as bus, MjpegCameraServer(bus.scene_name) as cameras:
            capture = cv2.VideoCapture(cameras.url("front"))

    """

    def __init__(
        self,
        scene_name: str,
        cameras: Sequence[str] = CAMERAS,
        width: int = 96,
        height: int = 96,
        fps: float = 30.0,
        host: str = DEFAULT_HOST,
        port: int = 0,
        jpeg_quality: int = 90,
    ) -> None:
        """Describe the server; nothing runs until `start`.

        Args:
            scene_name: the shared-memory mirror of the scene (`FeetechBusEmulator.scene_name`).
            cameras: the model's cameras to serve.
            width: frame width, pixels.
            height: frame height, pixels.
            fps: frames rendered per second (each camera).
            host: address to bind (loopback unless told otherwise).
            port: TCP port; 0 picks a free one.
            jpeg_quality: JPEG quality, 1..100.

        Raises:
            ValueError: an unknown camera or an out-of-range setting (the message names it).

        """
        model = load_model()
        known = [model.camera(i).name for i in range(model.ncam)]
        unknown = sorted(set(cameras) - set(known))
        if unknown or not cameras:
            raise ValueError(
                f"unknown camera(s) {unknown or list(cameras)}; the scene has {', '.join(known)}"
            )
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 1920:
                raise ValueError(f"{name} must be an int within [16, 1920] pixels, got {value!r}")
        if not (math.isfinite(fps) and 0 < fps <= 120):
            raise ValueError(f"fps must be within (0, 120], got {fps}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within [0, 65535], got {port}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within [1, 100], got {jpeg_quality}")
        self._settings = (scene_name, model.nq, tuple(cameras), width, height, fps, host, port, jpeg_quality)
        self.cameras = tuple(cameras)
        self.host = host
        self._device = DeviceProcess("the camera server")
        self._port: int | None = None
        self._dropout = False

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError(
                "the camera server is not running: call start() or use it as a context manager"
            )
        return self._port

    def url(self, camera: str) -> str:
        """The MJPEG stream URL of ``camera``."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r}; this server has {', '.join(self.cameras)}")
        return f"http://{self.host}:{self.port}/{camera}.mjpg"

    @property
    def dropout(self) -> bool:
        """Whether frames are withheld (a camera dropout fault); assign to change it."""
        return self._dropout

    @dropout.setter
    def dropout(self, value: bool) -> None:
        self._call("dropout", bool(value))
        self._dropout = bool(value)

    @property
    def counts(self) -> dict[str, int]:
        """Statistics: frames_rendered (per camera set), frames_sent (over all connections)."""
        return self._call("counts")

    def start(self) -> Self:
        """Start the server process; return once it listens."""
        if self._device.running:
            raise RuntimeError("the camera server is already running")
        self._port = self._device.start(_serve, self._settings, name="mjpeg-camera-server")
        return self

    def close(self) -> None:
        """Stop the server process (idempotent); it can be started again."""
        self._port = None
        self._device.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, *request: Any) -> Any:
        return self._device.call(*request)


def _serve(
    connection: Connection,
    scene_name: str,
    nq: int,
    cameras: tuple[str, ...],
    width: int,
    height: int,
    fps: float,
    host: str,
    port: int,
    jpeg_quality: int,
) -> None:
    """The server process: bind, then render and publish frames until the controller says close."""
    import cv2
    import mujoco

    try:
        mirror = SceneMirror(nq, scene_name)
        streams = {camera: _Stream() for camera in cameras}
        server = _CameraHTTPServer((host, port), streams)
    except (OSError, ValueError) as error:
        connection.send((False, error))
        return
    model = load_model()
    model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
    model.vis.global_.offheight = max(height, model.vis.global_.offheight)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    # The sim envs' render settings (sim.mujoco.engine.FrameRenderer), so both show the same images.
    scene_option = mujoco.MjvOption()
    scene_option.flags[mujoco.mjtVisFlag.mjVIS_STATIC] = True
    for flag in (
        mujoco.mjtRndFlag.mjRND_SHADOW,
        mujoco.mjtRndFlag.mjRND_REFLECTION,
        mujoco.mjtRndFlag.mjRND_SKYBOX,
    ):
        renderer.scene.flags[flag] = False
    threading.Thread(target=server.serve_forever, name="mjpeg-http", daemon=True).start()
    connection.send((True, server.server_address[1]))
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]
    period, dropout = 1.0 / fps, False
    deadline = time.monotonic()
    try:
        while True:
            if connection.poll(max(0.0, deadline - time.monotonic())):
                try:
                    command, *args = connection.recv()
                except EOFError:
                    return
                if command == "close":
                    connection.send((True, None))
                    return
                if command == "dropout":
                    dropout = args[0]
                    connection.send((True, None))
                elif command == "counts":
                    connection.send((True, dict(server.counts)))
                else:
                    connection.send((False, ValueError(f"unknown camera server command {command!r}")))
                continue
            now = time.monotonic()
            deadline = deadline + period if deadline + period > now else now
            if dropout:
                continue
            data.qpos[:] = mirror.read()[0]
            mujoco.mj_kinematics(model, data)
            mujoco.mj_camlight(model, data)
            for camera, stream in streams.items():
                renderer.update_scene(data, camera=camera, scene_option=scene_option)
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(renderer.render(), cv2.COLOR_RGB2BGR), encode)
                if ok:
                    stream.publish(jpeg.tobytes())
            server.count("frames_rendered")
    finally:
        for stream in streams.values():
            stream.close()
        server.shutdown()
        server.server_close()
        renderer.close()
        mirror.close()
        connection.close()
