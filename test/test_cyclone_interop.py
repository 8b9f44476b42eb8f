"""Cross-vendor DDS: a Cyclone DDS reader gets the ``~/trajectory`` Path that pwm_node publishes on Fast DDS.

pwm_node runs on rmw_fastrtps_cpp (in this process, tiny test model); two pure-Python Cyclone DDS readers
(``test/cyclone_path_reader.py``, the ``cyclonedds`` package, no ROS) listen on the same domain, restricted to
localhost. One uses the Cyclone XML of docs/ROBOT.md's "Cyclone DDS on the other side" (read from the doc, so the
doc's snippet is what is tested): ``//CycloneDDS/Domain/Compatibility/IgnoreTypeInformation`` set to 1.15
(eProsima's vendor id). It must receive the Paths an rclpy subscriber on Fast DDS receives, field for field. The
other runs without the setting: whether it matches is recorded (``record_property``), and checked against what
docs/ROBOT.md says for the versions measured there (``OBSERVED``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")
if importlib.util.find_spec("cyclonedds") is None:
    pytest.skip("the cyclonedds package is not installed: pip install cyclonedds (a binary wheel on Linux x86_64, "
                "CPython 3.10-3.13; elsewhere it builds from source against an installed Cyclone DDS C library, "
                "CYCLONEDDS_HOME)", allow_module_level=True)

from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.utilities import get_rmw_implementation_identifier  # noqa: E402

from pwm_ros import conversions  # noqa: E402

from .conftest import REPO_ROOT  # noqa: E402
from .model_utils import tiny_model_dir  # noqa: E402
from .ros_utils import Probe, spinning, wait_for  # noqa: E402
from .test_ros_node import NODE, Camera, _frames, _image, _node, _send_and_wait, _stamp, _wait_active  # noqa: E402

READER = Path(__file__).with_name("cyclone_path_reader.py")
SECTION = "## Cyclone DDS on the other side"
# What a reader without IgnoreTypeInformation did, measured on this machine: {(Fast DDS, cyclonedds): matched}.
# Fast DDS 3.2.3 is ROS 2 Kilted's (ros-fastdds wheel), 2.14.5 Jazzy's (ros-fastrtps wheel).
OBSERVED = {("3.2.3", "11.0.1"): False, ("2.14.5", "11.0.1"): True}
# Test-only addition to the doc's snippet: keep Cyclone on the loopback interface, discovering by unicast (lo has
# no multicast), like ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST keeps Fast DDS there.
LOCALHOST_XML = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General><Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces></General>
    <Discovery><Peers><Peer Address="127.0.0.1"/></Peers></Discovery>
  </Domain>
</CycloneDDS>
"""


def documented_xml() -> str:
    """The first ```xml block of docs/ROBOT.md's Cyclone section."""
    text = (REPO_ROOT / "docs" / "ROBOT.md").read_text()
    assert SECTION in text, f"docs/ROBOT.md has no section {SECTION!r}"
    block = re.search(r"```xml\n(.*?)```", text.split(SECTION, 1)[1], re.S)
    assert block, f"no ```xml block under {SECTION!r} in docs/ROBOT.md"
    return block.group(1)


def fast_dds_version() -> str:
    for dist in ("ros-fastdds", "ros-fastrtps"):  # Kilted's Fast DDS 3 wheel, Jazzy's Fast DDS 2 wheel
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


class CycloneReader:
    """``cyclone_path_reader.py`` in its own process (its own Cyclone domain config), its JSON events gathered."""

    def __init__(self, uri: str, topic: str, seconds: float = 50.0) -> None:
        env = dict(os.environ, CYCLONEDDS_URI=uri)  # ROS_DOMAIN_ID: the test's domain (own_domain)
        self.proc = subprocess.Popen([sys.executable, str(READER), topic, str(seconds)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any, events: bool) -> None:
        for line in stream:
            if events:
                self.events.append(json.loads(line))
            else:
                self.stderr.append(line.rstrip())

    def matched(self) -> int:
        return max((e["matched"] for e in list(self.events) if "matched" in e), default=-1)

    def paths(self) -> dict[int, dict[str, Any]]:
        return {e["path"]["stamp_ns"]: e["path"] for e in list(self.events) if "path" in e}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(5)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_dir()


def _file_uri(path: Path) -> str:
    return path.resolve().as_uri()


@pytest.mark.timeout(120)
def test_a_cyclone_reader_gets_the_path_fast_dds_publishes(model_dir: Path, tmp_path: Path,
                                                           record_property: Any) -> None:
    if get_rmw_implementation_identifier() != "rmw_fastrtps_cpp":
        pytest.skip(f"the node must publish on Fast DDS for this test (RMW_IMPLEMENTATION is "
                    f"{get_rmw_implementation_identifier()})")
    interop, localhost = tmp_path / "cyclone-fastdds.xml", tmp_path / "cyclone-localhost.xml"
    interop.write_text(documented_xml())
    localhost.write_text(LOCALHOST_XML)
    topic = f"{NODE}/trajectory"
    readers: dict[str, CycloneReader] = {}
    with spinning(_node(model_dir), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, topic)
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        try:
            # CYCLONEDDS_URI takes a comma-separated list: the doc's file, then the test's localhost restriction.
            readers["ignore"] = CycloneReader(f"{_file_uri(interop)},{_file_uri(localhost)}", topic)
            readers["plain"] = CycloneReader(_file_uri(localhost), topic)
            ignore, plain = readers["ignore"], readers["plain"]
            assert wait_for(lambda: ignore.matched() >= 1, 30.0), (
                f"the Cyclone reader with IgnoreTypeInformation never matched ~/trajectory: {ignore.events[-5:]} "
                f"{ignore.stderr[-5:]}")
            h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
            t0 = node.get_clock().now().nanoseconds
            sent = [_send_and_wait(camera, paths, _image(rgb, t0 + k * int(1e8))) for k, rgb in
                    enumerate(_frames(3, h, w, seed=5))]
            assert all(p is not None for p in sent), "the rclpy subscriber missed a Path"
            stamps = [_stamp(p) for p in sent]
            assert wait_for(lambda: set(stamps) <= set(ignore.paths()), 10.0), (
                f"the Cyclone reader got {sorted(ignore.paths())} of {stamps}")
            wait_for(lambda: set(stamps) <= set(plain.paths()), 2.0)  # the same chance, plus a little
            subscribers = node._pubs["trajectory"].get_subscription_count()  # noqa: SLF001 - Fast DDS's view
        finally:
            for r in readers.values():
                r.stop()
    for fast, theirs in zip(sent, (ignore.paths()[s] for s in stamps)):
        pose_stamps = [_stamp(p) for p in fast.poses]
        first = fast.poses[0].pose
        assert theirs["frame_id"] == fast.header.frame_id == "base_link"
        assert theirs["n_poses"] == len(fast.poses) > 0
        assert theirs["pose_stamps_ns"] == pose_stamps  # same stamps, every waypoint
        assert theirs["first_xyz"] == [first.position.x, first.position.y, first.position.z]  # float64, bit for bit
        assert theirs["xyz"] == [[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in fast.poses]
        assert theirs["first_q"] == [first.orientation.x, first.orientation.y, first.orientation.z,
                                     first.orientation.w]
        xyyaw = conversions.path_to_xyyaw(fast)[0]
        assert theirs["first_xyz"][:2] == [float(xyyaw[0, 0]), float(xyyaw[0, 1])]
    # The documented fact: does a Cyclone reader match Fast DDS's Path without IgnoreTypeInformation?
    versions = (fast_dds_version(), importlib.metadata.version("cyclonedds"))
    plain_matched = plain.matched() >= 1 and bool(plain.paths())
    record_property("fast_dds_cyclonedds_versions", versions)
    record_property("cyclone_matches_without_ignore_type_information", plain_matched)
    record_property("cyclone_plain_reader_stderr", plain.stderr[:3])
    record_property("fast_dds_subscription_count", subscribers)  # the probe and both Cyclone readers, matched or not
    print(f"Fast DDS {versions[0]}, cyclonedds {versions[1]}: a reader without IgnoreTypeInformation "
          f"{'matches' if plain_matched else 'does not match'} (stderr: {plain.stderr[:2]}); Fast DDS counts "
          f"{subscribers} subscribers")
    if versions in OBSERVED:
        assert plain_matched == OBSERVED[versions], (
            f"with Fast DDS {versions[0]} and cyclonedds {versions[1]} a reader without IgnoreTypeInformation "
            f"{'matched' if plain_matched else 'did not match'}, unlike docs/ROBOT.md says: update both")
