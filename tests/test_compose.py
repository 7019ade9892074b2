"""Static checks of docker-compose.yml and docker/Dockerfile against the code.

Docker does not run where the tests run, so these tests read the files. They
check what a broken stack would otherwise show only at start: the services
and their commands, the mounts, and the environment. Each variable name must
be one that lstmae, boto3 or Airflow reads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
AIRFLOW_SERVICES = [*AIRFLOW_COMMANDS, "airflow-init"]
AIRFLOW_VERSION = "3.3.2"
SOURCE_FOLDERS = ("lstmae", "dags", "plugins")

_DEFAULT = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def expand(value) -> str:
    """Replace ``${NAME:-default}`` by its default, as compose does when NAME is unset."""
    def default(match: re.Match) -> str:
        if match.group(2) is None:
            raise AssertionError(f"{match.group(0)} has no default, so the stack needs an .env file")
        return match.group(2)

    return _DEFAULT.sub(default, str(value))


def environment(service: str) -> dict[str, str]:
    return {key: expand(value) for key, value in (SERVICES[service].get("environment") or {}).items()}


def bind_mounts(service: str) -> dict[str, str]:
    """Return ``{target: source}`` of the service's bind mounts (sources starting with ``./``)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def command_text(service: str) -> str:
    """Return the service's command as its shell runs it, with the service's variables filled in."""
    command = SERVICES[service].get("command", "")
    text = expand(" ".join(command) if isinstance(command, list) else command).replace("$$", "$")
    env = environment(service)
    return re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda match: env.get(match.group(1), match.group(0)), text)


def source_text() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for folder in SOURCE_FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
    )


def test_services_present():
    expected = {"postgres", "minio", "minio-init", *AIRFLOW_SERVICES}
    assert expected <= set(SERVICES)


@pytest.mark.parametrize("service, command", sorted(AIRFLOW_COMMANDS.items()))
def test_airflow_component_command(service, command):
    assert SERVICES[service]["command"] == command


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_image_built_from_requirements(service):
    build = SERVICES[service]["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "docker/Dockerfile"
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in environment(service)


def test_dockerfile_installs_pinned_requirements():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^FROM apache/airflow:{re.escape(AIRFLOW_VERSION)}-python3\.11$", dockerfile, re.M)
    assert re.search(r"^RUN pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", dockerfile, re.M)
    requirements = (ROOT / "requirements.txt").read_text()
    assert f"apache-airflow=={AIRFLOW_VERSION}" in requirements.splitlines()
    ignore_file = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in ignore_file if line.strip() and not line.startswith("#")]
    assert ignored == ["*", "!requirements.txt", "!constraints.txt"]


def test_metadata_database_is_postgres():
    database = environment("postgres")
    url = urlparse(environment("airflow-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert url.scheme.startswith("postgresql")
    assert url.hostname == "postgres"
    assert url.username == database["POSTGRES_USER"]
    assert url.password == database["POSTGRES_PASSWORD"]
    assert url.path == "/" + database["POSTGRES_DB"]


def test_airflow_services_share_environment():
    reference = environment("airflow-scheduler")
    for service in AIRFLOW_SERVICES:
        assert environment(service) == reference, service


def test_execution_api_points_at_apiserver():
    url = urlparse(environment("airflow-scheduler")["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-apiserver"
    assert url.port == 8080
    assert url.path == "/execution/"
    assert "127.0.0.1:8080:8080" in SERVICES["airflow-apiserver"]["ports"]


def test_lake_bucket_created_by_init():
    lake = urlparse(environment("airflow-scheduler")["LSTMAE_LAKE"])
    assert lake.scheme == "s3"
    created = re.search(r'mc mb --ignore-existing "lake/([^"]+)"', command_text("minio-init"))
    assert created is not None
    assert created.group(1) == environment("minio-init")["BUCKET"] == lake.netloc


def test_s3_endpoint_and_credentials_are_minio():
    env = environment("airflow-scheduler")
    minio = environment("minio")
    endpoint = urlparse(env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "minio"
    assert f"127.0.0.1:{endpoint.port}:{endpoint.port}" in SERVICES["minio"]["ports"]
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_environment_names_read_by_code(monkeypatch, tmp_path):
    """Build lstmae's S3 client and configuration from the stack's environment."""
    from lstmae.config import load_config
    from lstmae.storage import make_s3_client

    env = environment("airflow-scheduler")
    for name in [key for key in os.environ if key.startswith(("AWS_", "LSTMAE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    config_source = ROOT / bind_mounts("airflow-scheduler")[env["LSTMAE_CONFIG"]]
    monkeypatch.setenv("LSTMAE_CONFIG", str(config_source))
    monkeypatch.setenv("LSTMAE_LAKE", env["LSTMAE_LAKE"])

    client = make_s3_client()
    assert client.meta.endpoint_url == env["AWS_ENDPOINT_URL"]
    assert client.meta.region_name == env["AWS_DEFAULT_REGION"]
    assert client._request_signer._credentials.access_key == env["AWS_ACCESS_KEY_ID"]
    assert load_config().lake == env["LSTMAE_LAKE"]


def test_lstmae_variables_exist_in_code():
    code = source_text()
    names = [name for service in SERVICES for name in environment(service) if name.startswith("LSTMAE_")]
    assert "LSTMAE_LAKE" in names
    assert "LSTMAE_CONFIG" in names
    for name in names:
        assert f'"{name}"' in code, f"{name} is set in docker-compose.yml but read nowhere in {SOURCE_FOLDERS}"


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_project_mounted(service):
    mounts = bind_mounts(service)
    env = environment(service)
    assert mounts["/opt/airflow/dags"] == "./dags"
    assert mounts["/opt/airflow/plugins"] == "./plugins"
    assert mounts[f"{env['PYTHONPATH']}/lstmae"] == "./lstmae"
    assert env["LSTMAE_CONFIG"] in mounts


def test_mount_sources_exist():
    for service in SERVICES:
        for source in bind_mounts(service).values():
            assert (ROOT / source).exists(), f"{service} mounts {source}, which is not in the repository"


def test_named_volumes_declared():
    declared = set(COMPOSE.get("volumes") or {})
    for service, definition in SERVICES.items():
        for volume in definition.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "/")):
                assert source in declared, f"{service} uses the undeclared volume {source}"


def test_ports_bind_to_loopback():
    for service, definition in SERVICES.items():
        for port in definition.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{service} publishes {port} on every interface"


def test_dag_pools_created_by_init():
    pools = set(re.findall(r'pool="([^"]+)"', "\n".join(p.read_text() for p in (ROOT / "dags").glob("*.py"))))
    assert pools, "expected the training task's pool in dags/"
    created = set(re.findall(r"airflow pools set (\S+)", command_text("airflow-init")))
    assert pools <= created


def test_start_order():
    for service in AIRFLOW_COMMANDS:
        depends_on = SERVICES[service]["depends_on"]
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully", service
        assert depends_on["postgres"]["condition"] == "service_healthy", service
        assert depends_on["minio-init"]["condition"] == "service_completed_successfully", service
    assert SERVICES["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "airflow db migrate" in command_text("airflow-init")
