"""Helpers for tests over real DDS: a spinning rclpy context, a probe node, lifecycle and parameter service calls.

conftest.py gives every test process its own ROS_DOMAIN_ID and keeps discovery on localhost.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
               "inactive_shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN}
DRIVER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def wait_for(cond: Callable[[], Any], timeout_s: float = 10.0, period_s: float = 0.01) -> Any:
    """Poll ``cond`` until it is truthy (returns its value) or the timeout passes (returns the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period_s)


_DOMAIN_BASE = int(os.environ.get("ROS_DOMAIN_ID", "0"))  # conftest.py: one per test process
_DOMAIN_OFFSETS = itertools.count(1)
_active_domains: list[int] = []
DOMAIN_RANGE = 101  # 0..100: the domain ids safe on every platform


@contextlib.contextmanager
def own_domain() -> Iterator[int]:
    """A ROS domain id of its own for one test (rclpy and any process the test starts use it via ROS_DOMAIN_ID).

    An earlier test's nodes of the same names can linger in the graph of a shared domain for a while after their
    context shut down; a client then sees several servers of one service and may never report it ready.
    Nested inside another ``own_domain`` it keeps that one (a test that starts a node process, then spins).
    """
    if _active_domains:
        yield _active_domains[-1]
        return
    previous = os.environ.get("ROS_DOMAIN_ID")
    domain = (_DOMAIN_BASE + next(_DOMAIN_OFFSETS)) % DOMAIN_RANGE
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    _active_domains.append(domain)
    try:
        yield domain
    finally:
        _active_domains.pop()
        if previous is None:
            os.environ.pop("ROS_DOMAIN_ID", None)
        else:
            os.environ["ROS_DOMAIN_ID"] = previous


@contextlib.contextmanager
def spinning(*nodes_factories: Callable[[], Node]) -> Iterator[tuple[MultiThreadedExecutor, list[Node]]]:
    """In a domain of its own: ``rclpy.init``, build the nodes, spin them in a background thread; shut everything
    down afterwards."""
    with own_domain() as domain:
        rclpy.init(domain_id=domain)
        executor = MultiThreadedExecutor(num_threads=4)
        nodes: list[Node] = []
        thread = threading.Thread(target=executor.spin, daemon=True)
        try:
            for make in nodes_factories:
                node = make()
                nodes.append(node)
                executor.add_node(node)
            thread.start()
            yield executor, nodes
        finally:
            executor.shutdown(timeout_sec=5.0)
            for node in reversed(nodes):
                node.destroy_node()
            rclpy.shutdown()
            thread.join(5.0)


class Probe(Node):
    """The test's side of the graph: publishes camera frames and collects whatever it subscribed to."""

    def __init__(self, name: str = "probe") -> None:
        super().__init__(name)
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._probe_clients: dict[tuple[Any, str], Any] = {}

    def listen(self, msg_type: Any, topic: str, qos: QoSProfile = DRIVER_QOS) -> list[Any]:
        with self._lock:
            box = self.received.setdefault(topic, [])
        self.create_subscription(msg_type, topic, box.append, qos)
        return box

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
        """Call a service and wait for its answer; one client per service for the probe's life (discovered once)."""
        key = (srv_type, name)
        client = self._probe_clients.get(key)
        if client is None:
            client = self._probe_clients[key] = self.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {name} did not appear ({self.count_services(name)} servers in the graph)")
        future = client.call_async(request)
        if not wait_for(future.done, timeout_s):
            raise TimeoutError(f"service {name} did not answer within {timeout_s} s")
        return future.result()

    def transition(self, node_name: str, name: str, timeout_s: float = 60.0) -> bool:
        req = ChangeState.Request()
        req.transition.id = TRANSITIONS[name]
        return bool(self.call(ChangeState, f"{node_name}/change_state", req, timeout_s).success)

    def state(self, node_name: str) -> str:
        return self.call(GetState, f"{node_name}/get_state", GetState.Request()).current_state.label

    def set_parameter(self, node_name: str, name: str, value: Any) -> Any:
        """One parameter through the node's set_parameters service; returns its SetParametersResult."""
        v = ParameterValue()
        if isinstance(value, bool):
            v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
        elif isinstance(value, int):
            v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
        elif isinstance(value, float):
            v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
        else:
            v.type, v.string_value = ParameterType.PARAMETER_STRING, str(value)
        req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)])
        return self.call(SetParameters, f"{node_name}/set_parameters", req).results[0]
