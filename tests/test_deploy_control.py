"""Only the operator can use the SuperLink's control side; an intruder gets nowhere.

The intruder is a process that is not the operator's: with namespaces, one inside
data holder 1's network namespace; on loopback, a process of this machine outside
the namespace whose loopback the federation runs on, which reaches nothing at all
(the SuperLink's own port and the operator's side of the proxy included). It has
a FLWR_HOME of its own whose `config.toml` holds only the address that holder's
SuperNode dials and the public `ca.pem`, a key of its own that nobody registered,
and even a registered SuperNode's private key (client-2's). While the operator's run
goes on it tries everything (`intrude()`): `flwr supernode register`, `flwr ls`,
`flwr run` (an app of its own) and `flwr stop`; the other control routes through
Flower's own client (unregister a SuperNode, list them, read the run's logs, pull
its artifacts), also signed with client-2's key; a certificate of its own with the
operator's name; the ServerApp's Runtime API; joining as a SuperNode; acting for
client-2 with its own key. Each is refused with what nginx or Flower answers;
the operator's run ends with the simulation's numbers, the operator still sees its
three SuperNodes and its one run, and nothing else.

The intruder's side runs as a program of its own, in the holder's namespace:
`python -m tests.test_deploy_control '<json>'` prints what each attempt got.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import NameOID
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    ListRunsRequest,
    PullArtifactsRequest,
    StreamLogsRequest,
    UnregisterNodeRequest,
)
from flwr.proto.fleet_pb2 import PullMessagesRequest, PushMessagesRequest
from flwr.proto.node_pb2 import Node
from flwr.supercore.control import ControlHttpClient
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from fedcore.deploy.network import Namespaces
from fedcore.deploy.pki import OPERATOR_NAME, make_node_key
from fedcore.deploy.proxy import NOT_HERE, NOT_THE_OPERATOR

from .conftest import REPO
from .test_deploy_faults import SMALL, federation, same_numbers  # noqa: F401 (a fixture)

BIN = Path(sys.executable).parent
CONNECTION = "intruder"

# What each attempt is answered: the front door's refusals, Flower's own.
REFUSED = {
    "flwr supernode register intruder.pub": NOT_THE_OPERATOR,
    "flwr ls": NOT_THE_OPERATOR,
    "flwr run its-own-app": NOT_THE_OPERATOR,
    "flwr stop RUN": NOT_THE_OPERATOR,
    "unregister client-3": f"HTTP 403: {NOT_THE_OPERATOR}",
    "list the SuperNodes": f"HTTP 403: {NOT_THE_OPERATOR}",
    "read the run's logs": f"HTTP 403: {NOT_THE_OPERATOR}",
    "pull the run's artifacts": f"HTTP 403: {NOT_THE_OPERATOR}",
    "list runs, signed with client-2's key": f"HTTP 403: {NOT_THE_OPERATOR}",
    "list runs, with a certificate of its own named for the operator": (
        "HTTP 400: The SSL certificate error"
    ),
    "take the ServerApp's task (Runtime API)": f"HTTP 403: {NOT_HERE}",
    "take the global model for client-2 with its own key": (
        "HTTP 401: Invalid SuperNode authentication"
    ),
    "hand in an update for client-2 with its own key": (
        "HTTP 401: Invalid SuperNode authentication"
    ),
    "plain HTTP": "HTTP 400: The plain HTTP request was sent to HTTPS port",
    "TLS without the federation's CA": "CERTIFICATE_VERIFY_FAILED",
}
BEHIND_THE_DOOR = {  # with namespaces: the SuperLink's own port, the operator's side
    "the SuperLink itself": "connection refused",
    "the operator's side of the proxy": "connection refused",
}
# On loopback, from outside the federation's namespace: nothing answers at all.
UNREACHABLE = {
    what: "Connection to the SuperLink is unavailable" if what.startswith("flwr ") else (
        "connection refused")
    for what in [*REFUSED, *BEHIND_THE_DOOR]
}  # fmt: skip


def _cli_error(output: str) -> str:
    """The text of the `flwr` CLI's error box (one line: COLUMNS is wide)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "─ Error ─" in line]
    if not starts:
        return f"no error: {output.strip()[-300:]}"
    box = []
    for line in lines[starts[-1] + 1 :]:
        if line.startswith("╰"):
            break
        box.append(line.strip("│ "))
    return " ".join(box)


def _http_error(call) -> str:
    """What an HTTP attempt got: `HTTP <code>: <detail or title>`, or the failure."""
    try:
        response = call()
    except httpx.HTTPStatusError as error:
        response = error.response
    except httpx.HTTPError as error:
        text = str(error)
        return "connection refused" if "refused" in text.lower() else text
    if response.is_success:
        return f"accepted: HTTP {response.status_code}"
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        title = re.search(r"<title>\d+ (.*?)</title>", response.text)
        detail = title.group(1) if title else response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


def _own_operator_certificate(home: Path, key_file: Path) -> ssl.SSLContext:
    """A self-signed certificate named for the operator, made with client-2's key."""
    key = load_ssh_private_key(key_file.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )  # fmt: skip
    (home / "operator.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (home / "operator.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(cafile=str(home / "ca.pem"))
    context.load_cert_chain(home / "operator.pem", home / "operator.key")
    return context


def intrude(plan: dict) -> dict[str, str]:
    """Every attempt at once; what each got (run as the intruder, in its FLWR_HOME)."""
    home, address, run = Path(plan["home"]), plan["address"], plan["run_id"]
    ca = (home / "ca.pem").read_bytes()
    cli = {
        "flwr supernode register intruder.pub": ["supernode", "register",
                                                 str(home / "intruder.pub"), CONNECTION],
        "flwr ls": ["ls", CONNECTION],
        "flwr run its-own-app": ["run", str(home / "app"), CONNECTION],
        "flwr stop RUN": ["stop", run, CONNECTION],
    }  # fmt: skip
    env = os.environ | {"COLUMNS": "1000", "NO_COLOR": "1"}
    running = {
        what: subprocess.Popen([str(BIN / "flwr"), *args], env=env, cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for what, args in cli.items()
    }  # fmt: skip

    node_key = load_ssh_private_key((home / "client-2").read_bytes(), None)
    own_key = load_ssh_private_key((home / "intruder").read_bytes(), None)
    client_2 = Node(node_id=plan["client_2"])

    def control(method: str, request, signed: bool = False):
        sign = [NodeAuthHttpInterceptor(node_key, node_key.public_key())] if signed else []
        with ControlHttpClient.from_server_address(address, False, ca, sign) as client:
            reply = getattr(client, method)(request)
            return list(reply) if method == "StreamLogs" else reply

    def fleet_with_own_key(request):
        sign = NodeAuthHttpInterceptor(own_key, own_key.public_key())
        with FleetHttpClient.from_server_address(address, False, ca, [sign]) as client:
            method = client.PullMessages if isinstance(request, PullMessagesRequest) else (
                client.PushMessages)  # fmt: skip
            return method(request)

    def post(url, verify):
        return httpx.post(url, content=b"", verify=verify, timeout=10,
                          headers={"content-type": "application/protobuf"})  # fmt: skip

    operator_context = _own_operator_certificate(home, home / "client-2")
    ca_context = ssl.create_default_context(cafile=str(home / "ca.pem"))
    raw = {
        "unregister client-3": lambda: control(
            "UnregisterNode", UnregisterNodeRequest(node_id=plan["client_3"])),
        "list the SuperNodes": lambda: control("ListNodes", ListNodesRequest()),
        "read the run's logs": lambda: control(
            "StreamLogs", StreamLogsRequest(run_id=int(run))),
        "pull the run's artifacts": lambda: control(
            "PullArtifacts", PullArtifactsRequest(run_id=int(run))),
        "list runs, signed with client-2's key": lambda: control(
            "ListRuns", ListRunsRequest(), signed=True),
        "list runs, with a certificate of its own named for the operator": lambda: post(
            f"https://{address}/v1/control/list-runs", operator_context),
        "take the ServerApp's task (Runtime API)": lambda: post(
            f"https://{address}/v1/runtime/acquire-task", ca_context),
        "take the global model for client-2 with its own key": lambda: fleet_with_own_key(
            PullMessagesRequest(node=client_2)),
        "hand in an update for client-2 with its own key": lambda: fleet_with_own_key(
            PushMessagesRequest(node=client_2)),
        "plain HTTP": lambda: post(f"http://{address}/v1/fleet/pull-messages", False),
        "TLS without the federation's CA": lambda: post(
            f"https://{address}/v1/fleet/pull-messages", True),
    }  # fmt: skip
    for what, behind in plan["behind_the_door"].items():
        raw[what] = lambda behind=behind: post(f"https://{behind}/v1/control/list-runs",
                                               ca_context)  # fmt: skip
    with ThreadPoolExecutor(len(raw)) as pool:
        answers = dict(zip(raw, pool.map(_http_error, raw.values()), strict=True))
    for what, process in running.items():
        output, _ = process.communicate(timeout=120)
        answers[what] = _cli_error(output) if process.returncode else f"accepted: {output}"
    return answers


ITS_OWN_APP = """[project]
name = "not-fedcore"
version = "1.0.0"
[tool.flwr.app]
publisher = "intruder"
[tool.flwr.app.components]
serverapp = "app:server"
clientapp = "app:client"
"""


def intruder_home(fed, folder: Path) -> Path:
    """What a curious data holder has: the address, `ca.pem`, client-2's private key,
    a key of its own, an app of its own; a `config.toml` of its own."""
    folder.mkdir()
    (folder / "app").mkdir()
    (folder / "app" / "pyproject.toml").write_text(ITS_OWN_APP)
    (folder / "app" / "app.py").write_text("server = client = None  # anything at all\n")
    shutil.copy(fed.credentials.ca_cert, folder / "ca.pem")
    shutil.copy(fed.holders[1].key.private, folder / "client-2")
    make_node_key(folder, "intruder")
    (folder / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{fed.network.superlink_address(0)}"\n'
        f'root-certificates = "{folder / "ca.pem"}"\n'
    )
    return folder


@pytest.mark.parametrize(
    "namespaces",
    [
        pytest.param(False, id="loopback"),
        pytest.param(True, id="namespaces"),
    ],
)  # fmt: skip
@pytest.mark.skipif(not Namespaces.available(), reason="needs root and `ip netns`")
def test_an_intruder_can_neither_join_nor_use_the_control_side_nor_touch_the_model(
    federation,  # noqa: F811 (the fixture imported above)
    federated_small,
    tmp_path,
    namespaces,
):
    fed = federation(namespaces=namespaces)
    # A SuperNode with a key nobody registered, claiming client 2's partition, while
    # the run starts (had it joined, the ServerApp would have counted 4 SuperNodes).
    intruder_node = fed.start_intruder(1)
    run = fed.start_run(SMALL, timeout=240)
    started = run.wait_for(r"Successfully started run (\d+)", 90)
    assert started, "the operator's run did not start"

    home = intruder_home(fed, tmp_path / "intruder-home")
    net = fed.network
    # With namespaces, from data holder 1's: the SuperLink's loopback is not the
    # holder's. On loopback, from this machine, outside the federation's namespace.
    host = net.superlink_address(0).split(":")[0]
    behind = {
        "the SuperLink itself": f"{host}:{net.internal_port}",
        "the operator's side of the proxy": f"{host}:{net.operator_port}",
    }
    plan = {
        "home": str(home), "address": net.superlink_address(0), "run_id": started.group(1),
        "client_2": fed.holders[1].node_id, "client_3": fed.holders[2].node_id,
        "behind_the_door": behind,
    }  # fmt: skip
    env = os.environ | {"FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
    program = [sys.executable, "-m", "tests.test_deploy_control", json.dumps(plan)]
    if namespaces:
        program = net.in_holder(0, program)
    done = subprocess.run(program, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.splitlines()[-1])
    print()
    for what, answer in answers.items():
        print(f"{what}: {answer}")
    expected = (REFUSED | BEHIND_THE_DOOR) if namespaces else UNREACHABLE
    assert set(answers) == set(expected)
    for what, answer in answers.items():
        assert expected[what] in answer, what

    assert intruder_node.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in fed.log("intruder")
    outcome = run.finish()
    assert outcome.ok, outcome.error
    federated = outcome.results["federated"]
    assert federated["failures"] == []
    assert set(federated["history"][1]["client_loss"]) == {"1", "2", "3"}
    same_numbers(federated, federated_small[0])  # as if the intruder had never been there
    # The operator's view: its three SuperNodes, its one run, completed.
    nodes = fed.control("supernode", "list")["nodes"]
    assert sorted(int(n["node-id"]) for n in nodes) == sorted(h.node_id for h in fed.holders)
    runs = fed.control("ls")["runs"]
    assert [(r["run-id"], r["status"]) for r in runs] == [
        (str(outcome.run_id), "finished:completed")
    ]


if __name__ == "__main__":  # the intruder's side (see the module's docstring)
    print(json.dumps(intrude(json.loads(sys.argv[1]))))
