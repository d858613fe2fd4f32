"""``zhifu serve --tls-cert --tls-key``: a real server over https, and its bad usages."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import (
    CLI_TIMEOUT_S,
    HTTP_TIMEOUT_S,
    START_ATTEMPTS_MAX,
    STARTUP_TIMEOUT_S,
    _logged_errors,
    _read_log,
    _stop,
    _tail,
    free_port,
    run_cli,
    server_env,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytestmark = pytest.mark.xdist_group("e2e-tls")

HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def _write_self_signed(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zhifu test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return _write_self_signed(tmp_path_factory.mktemp("tls"))


def _trusting(files: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts exactly the test certificate."""
    return ssl.create_default_context(cafile=str(files.cert))


def _wait_healthy_https(process: subprocess.Popen[bytes], base_url: str, files: TlsFiles) -> bool:
    """True once /healthz answers 200 over https; False if the process exits first."""
    context = _trusting(files)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{base_url}/healthz", verify=context, timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the server at {base_url} did not answer /healthz in {STARTUP_TIMEOUT_S:g} s")


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[str]:
    """A real ``zhifu serve`` over https; its base URL. Stopped and checked at the end."""
    home = tmp_path_factory.mktemp("zhifu-home")
    env = {**server_env(home), "PYTHONUNBUFFERED": "1"}  # the banner is read while it runs
    run_cli(env, "db", "upgrade")
    for attempt in range(START_ATTEMPTS_MAX):
        port = free_port()
        stderr_path = home / f"server-{attempt}.log"
        with (home / f"server-{attempt}.out").open("wb") as stdout, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zhifu.cli",
                    "serve",
                    "--port",
                    str(port),
                    "--tls-cert",
                    str(tls_files.cert),
                    "--tls-key",
                    str(tls_files.key),
                ],
                env=env,
                stdout=stdout,
                stderr=err,
            )
        base_url = f"https://127.0.0.1:{port}"
        if _wait_healthy_https(process, base_url, tls_files):
            break
        process.wait()  # exited before answering: most likely the port was taken meanwhile
    else:
        pytest.fail(f"the https server would not start:\n{_tail(stderr_path)}")
    stdout_text = (home / f"server-{attempt}.out").read_text(encoding="utf-8")
    assert f"serving on {base_url}" in stdout_text
    try:
        yield base_url
    finally:
        _stop(process, stderr_path)
    errors = _logged_errors(_read_log(stderr_path))
    if errors:
        pytest.fail(f"the https server logged {len(errors)} error(s): {errors[:3]}")


def test_serves_https_with_hsts(https_server: str, tls_files: TlsFiles) -> None:
    with httpx.Client(
        base_url=https_server, verify=_trusting(tls_files), timeout=HTTP_TIMEOUT_S
    ) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["strict-transport-security"] == HSTS
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"]
        problem = client.get("/v1/nowhere")
        assert problem.status_code == 404
        assert problem.headers["strict-transport-security"] == HSTS
        assert problem.headers["cache-control"] == "no-store"


def test_a_client_that_does_not_trust_the_certificate_is_refused(https_server: str) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{https_server}/healthz", timeout=HTTP_TIMEOUT_S)


def test_plain_http_to_the_https_port_gets_no_answer(https_server: str) -> None:
    plain_url = https_server.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain_url}/healthz", timeout=HTTP_TIMEOUT_S)


# --- bad usages: refused before the server starts ------------------------------------


def _serve_fails(tmp_path: Path, *args: str, **env_extra: str) -> str:
    """Run ``zhifu serve ARGS``, expect a usage error; its stderr."""
    env = {**server_env(tmp_path / "home"), **env_extra}
    completed = subprocess.run(
        [sys.executable, "-m", "zhifu.cli", "serve", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "serving on" not in completed.stdout
    return completed.stderr


def test_a_certificate_without_a_key_is_refused(tmp_path: Path, tls_files: TlsFiles) -> None:
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert))
    assert "--tls-cert and --tls-key (ZHIFU_TLS_CERT, ZHIFU_TLS_KEY) go together" in stderr


def test_a_key_without_a_certificate_is_refused(tmp_path: Path, tls_files: TlsFiles) -> None:
    stderr = _serve_fails(tmp_path, "--tls-key", str(tls_files.key))
    assert "go together" in stderr


def test_the_environment_variables_are_read(tmp_path: Path, tls_files: TlsFiles) -> None:
    stderr = _serve_fails(tmp_path, ZHIFU_TLS_CERT=str(tls_files.cert))
    assert "go together" in stderr


def test_a_missing_file_is_named(tmp_path: Path, tls_files: TlsFiles) -> None:
    missing = tmp_path / "missing.pem"
    stderr = _serve_fails(tmp_path, "--tls-cert", str(missing), "--tls-key", str(tls_files.key))
    assert "--tls-cert" in stderr
    assert "does not exist" in stderr


def test_a_key_that_is_not_pem_is_refused(tmp_path: Path, tls_files: TlsFiles) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert), "--tls-key", str(junk))
    assert "cannot serve https with certificate" in stderr


def test_an_encrypted_key_is_refused(tmp_path: Path, tls_files: TlsFiles) -> None:
    key = serialization.load_pem_private_key(tls_files.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    stderr = _serve_fails(tmp_path, "--tls-cert", str(tls_files.cert), "--tls-key", str(encrypted))
    assert "is encrypted" in stderr
