"""The deployment's parts without a federation: credentials, which results a run
reports, failure reasons without local paths and with the SuperNode's name."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.app import Error, Message, Metadata
from flwr.app.message import make_message
from flwr.cli.supernode.register import try_load_public_key

from fedcore.deploy import leftovers, proxy
from fedcore.deploy.federation import DeployedRun
from fedcore.deploy.network import Namespaces
from fedcore.deploy.pki import CredentialError, make_federation_credentials, make_node_key
from fedcore.flower.client_app import without_local_paths
from fedcore.flower.rounds import name_the_node
from fedcore.flower.strategies import failure_reason

from .conftest import REPO
from .test_deployment import namespaces as fedcore_namespaces


def test_the_certificates_are_signed_by_the_ca_for_their_one_use(tmp_path):
    creds = make_federation_credentials(tmp_path / "pki", ["10.213.1.1"], ["superlink.example"])
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    operator = x509.load_pem_x509_certificate(creds.operator_cert.read_bytes())
    for signed in (cert, operator):
        signed.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {  # and the hops on its machine
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.213.1.1"),
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "superlink.example"}
    usage = x509.ExtendedKeyUsage
    assert list(cert.extensions.get_extension_for_class(usage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(operator.extensions.get_extension_for_class(usage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert operator.subject.rfc4514_string() == "CN=fedcore operator"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [  # the CA's key is not kept
        "ca.pem", "operator.key", "operator.pem", "superlink.key", "superlink.pem",
    ]  # fmt: skip


def test_keys_are_0600_and_certificates_0644_whatever_the_umask(tmp_path):
    for umask in (0o077, 0o000):
        previous = os.umask(umask)
        try:
            creds = make_federation_credentials(tmp_path / f"pki-{umask:o}", ["127.0.0.1"])
            key = make_node_key(tmp_path / f"keys-{umask:o}", "client-1")
        finally:
            os.umask(previous)
        modes = {p.name: p.stat().st_mode & 0o777 for p in (creds.key.parent, key.private.parent)
                 for p in p.iterdir()}  # fmt: skip
        assert modes == {
            "ca.pem": 0o644, "superlink.pem": 0o644, "operator.pem": 0o644,
            "superlink.key": 0o600, "operator.key": 0o600,
            "client-1": 0o600, "client-1.pub": 0o644,
        }  # fmt: skip
        assert creds.key.parent.stat().st_mode & 0o777 == 0o700


def test_a_key_is_never_written_over_a_file_or_through_a_link(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    existing = keys / "client-1"
    existing.write_text("someone else's file")
    existing.chmod(0o644)
    with pytest.raises(CredentialError) as refused:
        make_node_key(keys, "client-1")
    assert str(refused.value) == (
        f"{existing} exists already: keys and certificates are never overwritten"
    )
    assert (
        existing.read_text() == "someone else's file" and existing.stat().st_mode & 0o777 == 0o644
    )

    target = tmp_path / "where-the-link-points"
    (keys / "client-2").symlink_to(target)  # dangling: O_CREAT alone would create the target
    with pytest.raises(CredentialError) as refused:
        make_node_key(keys, "client-2")
    assert str(refused.value) == (
        f"{keys / 'client-2'} is a symbolic link: keys are never written through one"
    )
    assert not target.exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)  # the folder itself a link
    with pytest.raises(CredentialError) as refused:
        make_federation_credentials(tmp_path / "linked", ["127.0.0.1"])
    assert str(refused.value) == (
        f"{tmp_path / 'linked'}: not a folder to write keys into (a symbolic link)"
    )
    assert list(elsewhere.iterdir()) == []


def test_a_supernode_key_is_what_flower_reads_and_registers(tmp_path):
    key = make_node_key(tmp_path, "client-1")
    private = load_ssh_private_key(key.private.read_bytes(), None)  # as flower-supernode
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert try_load_public_key(key.public)  # as `flwr supernode register`


def test_nginx_accepts_the_front_door_and_the_operator_side(tmp_path):
    pki = make_federation_credentials(tmp_path / "pki", ["127.0.0.1"]).ca_cert.parent
    servers = proxy.front_door("127.0.0.1:1", "127.0.0.1:2", pki, tmp_path) + (
        proxy.operator_side("127.0.0.1:3", "127.0.0.1:1", proxy.SUPERLINK_NAME, pki)
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(proxy.config(servers, tmp_path, tmp_path))
    checked = subprocess.run(
        proxy.command(conf, tmp_path / "error.log") + ["-t"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


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


def test_a_second_signal_does_not_cut_the_cleanup_short(tmp_path):
    # The first signal ends the run; the ones during the cleanup are only noted.
    code = """
import os, signal, time
from fedcore.deploy.command import Signals
with Signals() as signals:
    try:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            print("the run went on")
        finally:
            with signals.uninterrupted():
                for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
                    os.kill(os.getpid(), number)
                    time.sleep(0.05)
                print("the cleanup finished")
    except KeyboardInterrupt:
        print("stopped by", signal.Signals(signals.received).name)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["the cleanup finished", "stopped by SIGTERM"]


def gone_pid() -> int:
    """The id of a process that has ended (pids are handed out in order, so not soon again)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_what_a_killed_deploy_left_is_removed_and_a_running_ones_kept(tmp_path):
    dead, alive = gone_pid(), os.getpid()
    made = {}
    for owner in (dead, alive):
        folder = Path(tempfile.mkdtemp(prefix=f"{leftovers.tag(owner)}-f1-"))
        (folder / "superlink.key").write_text("secret")
        process = subprocess.Popen(
            ["sleep", "120"], env=os.environ | {leftovers.OWNER_ENV: str(owner)},
            start_new_session=True,
        )  # fmt: skip
        namespace = f"{leftovers.tag(owner)}-f1-link" if Namespaces.available() else None
        if namespace:
            subprocess.run(["ip", "netns", "add", namespace], check=True)
        made[owner] = (folder, process, namespace)
    try:
        lines = leftovers.remove_stale()
        namespaces = "1 network namespace" if Namespaces.available() else "0 network namespaces"
        assert (
            f"deploy: removed what deploy pid {dead} (gone) left behind: 1 process, "
            f"{namespaces}, 1 temporary folder"
        ) in lines
        assert not any(f"pid {alive} " in line for line in lines)
        folder, process, namespace = made[dead]
        assert not folder.exists()
        process.wait(timeout=30)  # it ended (stopped and reaped by the cleanup)
        assert namespace is None or namespace not in fedcore_namespaces()
        folder, process, namespace = made[alive]
        assert (folder / "superlink.key").exists() and process.poll() is None
        assert namespace is None or namespace in fedcore_namespaces()
    finally:
        for folder, process, namespace in made.values():
            shutil.rmtree(folder, ignore_errors=True)
            process.kill()
            process.wait()
            if namespace:
                subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def test_loopback_runs_in_a_namespace_of_its_own_or_warns_that_it_cannot(capsys):
    """As root the federation's one loopback is a namespace's, made and removed here;
    without one, deploy warns that every local process reaches the SuperLink."""
    from types import SimpleNamespace

    from fedcore.deploy.command import describe
    from fedcore.deploy.network import Loopback

    shared = Loopback(2)
    assert shared.link_ns is None and shared.holder_ns == [None, None]
    assert shared.in_superlink(["flwr", "ls"]) == ["flwr", "ls"]
    running = SimpleNamespace(pid=1)
    fed = SimpleNamespace(network=shared, secure=True, superlink=running, proxy=running,
                          control_address="127.0.0.1:1", holders=[])  # fmt: skip
    describe(fed)
    assert "deploy: warning: on this machine's loopback" in capsys.readouterr().out
    if not Namespaces.available():
        return
    private = Loopback(2, f"{leftovers.tag()}-f9")
    before = fedcore_namespaces()
    private.create()
    try:
        assert fedcore_namespaces() - before == {private.link_ns}
        assert private.in_holder(1, ["true"]) == ["ip", "netns", "exec", private.link_ns, "true"]
        assert not private.listening(private.superlink_port)
        describe(SimpleNamespace(**{**vars(fed), "network": private}))
        assert "warning" not in capsys.readouterr().out
    finally:
        private.close()
    assert fedcore_namespaces() == before
