"""The deployment's parts without a federation: credentials, which results a run
reports, failure reasons without local paths and with the SuperNode's name."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Error, Message, Metadata
from flwr.app.message import make_message
from flwr.cli.supernode.register import try_load_public_key

from fedcore.deploy.federation import DeployedRun
from fedcore.deploy.pki import make_node_key, make_server_credentials
from fedcore.flower.client_app import without_local_paths
from fedcore.flower.rounds import name_the_node
from fedcore.flower.strategies import failure_reason


def test_the_superlink_certificate_is_signed_by_the_ca_for_the_addresses_dialled(tmp_path):
    creds = make_server_credentials(tmp_path, ["127.0.0.1", "10.213.1.1"])
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.213.1.1"),
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert creds.key.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("ca*.key"))  # the CA's key is not kept


def test_a_supernode_key_is_what_flower_reads_and_registers(tmp_path):
    key = make_node_key(tmp_path, "client-1")
    private = load_ssh_private_key(key.private.read_bytes(), None)  # as flower-supernode
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert key.private.stat().st_mode & 0o777 == 0o600
    assert try_load_public_key(key.public)  # as `flwr supernode register`


def finished_run(tmp_path, printed: str) -> DeployedRun:
    process = subprocess.Popen(
        [sys.executable, "-c", f"print({printed!r})"], stdout=subprocess.PIPE, text=True
    )
    now = time.monotonic()
    return DeployedRun(process, tmp_path, now, now + 30)


def test_a_run_reports_its_own_results_only(tmp_path):
    # An earlier run's files in the folder, `latest.json` among them.
    (tmp_path / "latest.json").write_text('{"federated": {"accuracy": 0.9}}')
    (tmp_path / "20200101-000000-run6.json").write_text('{"federated": {"accuracy": 0.9}}')
    outcome = finished_run(tmp_path, "Successfully started run 7").finish()
    assert outcome.run_id == 7 and outcome.results is None
    assert outcome.error == "run 7 ended without results (exit code 0)"

    (tmp_path / "20200101-000001-run7.json").write_text('{"federated": {"accuracy": 0.5}}')
    outcome = finished_run(tmp_path, "Successfully started run 7").finish()
    assert outcome.ok and outcome.results == {"federated": {"accuracy": 0.5}}


def test_a_run_past_its_timeout_is_stopped_with_one_line(tmp_path):
    printed = "Successfully started run 9\nINFO :  Waiting for nodes to connect: 2 connected."
    process = subprocess.Popen(
        [sys.executable, "-c", f"print({printed!r}, flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    now = time.monotonic()
    handle = DeployedRun(process, tmp_path, now, now + 2)
    outcome = handle.finish()
    assert process.poll() is not None and time.monotonic() - now < 20
    assert outcome.error == (
        "run 9 timed out after 2 s and was stopped (last: Waiting for nodes to connect: 2 "
        "connected.)"
    )


def test_a_failed_run_gives_the_serverapps_one_line(tmp_path):
    printed = (
        "Successfully started run 8\n"
        "\x1b[91mERROR \x1b[0m:     fedcore: run failed: round 1: every client failed (x)"
    )
    outcome = finished_run(tmp_path, printed).finish()
    assert outcome.error == "fedcore: run failed: round 1: every client failed (x)"


def test_a_supernodes_failure_leaves_its_local_paths_out():
    data_dir = "/srv/hospital-2/mnist"
    assert (
        without_local_paths(f"{data_dir}: data folder not found (set a folder)", data_dir)
        == "data-dir: data folder not found (set a folder)"
    )
    assert (
        without_local_paths(f"{data_dir}/t10k-labels-idx1-ubyte: the file is empty", data_dir)
        == "data-dir/t10k-labels-idx1-ubyte: the file is empty"
    )
    assert (
        without_local_paths("[Errno 13] Permission denied: '/home/ann/cache/x.npy'", "")
        == "[Errno 13] Permission denied: '.../x.npy'"
    )
    assert without_local_paths("loss 1/2 at https://example.org/a", "") == (
        "loss 1/2 at https://example.org/a"
    )


def reply_with(reason: str) -> Message:
    """An error reply as the SuperLink makes one (from the SuperLink, about node 42's)."""
    metadata = Metadata(
        run_id=1, message_id="", src_node_id=1, dst_node_id=1, reply_to_message_id="m",
        group_id="1", created_at=time.time(), ttl=60.0, message_type="train",
    )  # fmt: skip
    return make_message(metadata=metadata, error=Error(code=5, reason=reason))


def test_a_failure_that_does_not_say_which_client_names_the_supernode():
    silent = reply_with("Error: Node Unavailable")
    name_the_node(silent, "client-2 (node 42)")
    assert failure_reason(silent, 1) == (
        "round 1: SuperNode client-2 (node 42): Error: Node Unavailable"
    )
    named = reply_with("<class 'x.ClientFailure'>:<'client 2 failed in round 1: why'>")
    name_the_node(named, "client-2 (node 42)")
    assert failure_reason(named, 1) == "client 2 failed in round 1: why"
    unnamed = reply_with("Error: Node Unavailable")
    name_the_node(unnamed, "")  # the simulation's SuperNodes have no names
    assert failure_reason(unnamed, 1) == "round 1: Error: Node Unavailable"
