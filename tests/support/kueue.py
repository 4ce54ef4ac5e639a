"""Kueue (sigs.k8s.io/kueue, built by `scripts/test-cluster kueue`) as a process beside the test
cluster: its CRDs installed, its controller manager pointed at the cluster's kubeconfig, listening
on 127.0.0.1 only (webhook server and health probe; metrics and the visibility API server off).

The apiserver is told of no Kueue webhook (Poiesis creates its Jobs suspended itself, so none is
needed); the webhook server still starts, with a self-signed certificate. The manager also reads
a metrics certificate from a fixed path under /etc: it runs in a mount namespace of its own where
/etc is a directory of this test's, so nothing is written to the host's /etc.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.cluster import binaries_dir
from tests.support.postgres import free_port

CONFIG = """\
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:{health}
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: {webhook}
  certDir: {certs}
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
integrations:
  frameworks: ["batch/job"]
"""


def kueue_dir() -> Path | None:
    found = os.environ.get("POIESIS_KUEUE_DIR")
    if found and (Path(found) / "kueue").exists():
        return Path(found)
    return None


def unavailable_reason() -> str | None:
    if kueue_dir() is None:
        return (
            "Kueue is not built: run scripts/test (or scripts/test-cluster kueue and set POIESIS_KUEUE_DIR)"
        )
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "Kueue runs in a mount namespace of its own here: that needs root and unshare"
    return None


def _certificate(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(binaries_dir() / "kubectl"), "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


@contextmanager
def running_kueue(kubeconfig: str, work: Path) -> Iterator[None]:
    """Kueue's CRDs in the cluster and its manager running until the block ends."""
    home = kueue_dir()
    assert home is not None, unavailable_reason()
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(home / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    etc = work / "etc"
    _certificate(etc / "kueue" / "metrics" / "certs")
    _certificate(work / "webhook-certs")
    for name in ("hosts", "resolv.conf", "nsswitch.conf"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), etc / name)
    health = free_port()
    config = work / "kueue.yaml"
    config.write_text(CONFIG.format(health=health, webhook=free_port(), certs=work / "webhook-certs"))
    command = (
        f"mount --bind {etc} /etc && exec {home / 'kueue'} --config={config} --kubeconfig={kubeconfig}"
        " --feature-gates=VisibilityOnDemand=false"
    )
    with (work / "kueue.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"kueue exited: {(work / 'kueue.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kueue not ready: {(work / 'kueue.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
