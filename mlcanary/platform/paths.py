"""Names and places of the local platform: the component (pidfile) names, the checkout it deploys
from (:func:`repo_root`) and :class:`PlatformPaths` (its files under the state directory and the
URLs its services listen on)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mlcanary.config import MLFLOW_DB_FILENAME, Settings, http_url

__all__ = ["COMPONENTS", "MLFLOW", "PREFECT", "WEBHOOK", "WORKER", "PlatformPaths", "repo_root"]

MLFLOW: Final = "platform-mlflow"
PREFECT: Final = "platform-prefect"
WORKER: Final = "platform-worker"
WEBHOOK: Final = "platform-webhook"
#: Pidfile names of the platform's processes, in start order.
COMPONENTS: Final = (MLFLOW, PREFECT, WORKER, WEBHOOK)


def repo_root() -> Path:
    """The checkout this package runs from (``prefect.yaml`` and ``configs/`` live there)."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PlatformPaths:
    """Where the platform keeps its files and where its services listen."""

    state_dir: Path
    host: str
    mlflow_port: int
    prefect_port: int
    webhook_port: int

    @classmethod
    def of(cls, settings: Settings) -> PlatformPaths:
        serving = settings.serving
        return cls(
            state_dir=Path(settings.state_dir).absolute(),
            host=serving.host,
            mlflow_port=serving.mlflow_port,
            prefect_port=serving.prefect_port,
            webhook_port=serving.webhook_port,
        )

    @property
    def private_dir(self) -> Path:
        """``<state>/platform``: the webhook secret and the MLflow encryption key (0700)."""
        return self.state_dir / "platform"

    @property
    def secret_file(self) -> Path:
        return self.private_dir / "webhook-secret"

    @property
    def key_file(self) -> Path:
        return self.private_dir / "mlflow-webhook-key"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def mlflow_db(self) -> Path:
        return self.state_dir / MLFLOW_DB_FILENAME

    @property
    def env_file(self) -> Path:
        return self.state_dir / "platform.env"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @property
    def mlflow_url(self) -> str:
        return http_url(self.host, self.mlflow_port)

    @property
    def prefect_url(self) -> str:
        return http_url(self.host, self.prefect_port)

    @property
    def prefect_api_url(self) -> str:
        return self.prefect_url + "/api"

    @property
    def webhook_url(self) -> str:
        return self.webhook_base_url + "/webhook"

    @property
    def webhook_base_url(self) -> str:
        return http_url(self.host, self.webhook_port)

    def health_url(self, name: str) -> str | None:
        """The URL answering 200 when component ``name`` is up (None for the worker, which has none)."""
        return {
            MLFLOW: self.mlflow_url + "/health",
            PREFECT: self.prefect_api_url + "/health",
            WEBHOOK: self.webhook_base_url + "/healthz",
        }.get(name)
