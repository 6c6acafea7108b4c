"""The local platform behind ``mlcanary up --platform``: MLflow and Prefect servers, a worker, the
webhook receiver, and the serving stack — so a release can be watched in the Prefect and MLflow UIs.

``up`` starts, in this order, each as its own process group with a pidfile in ``<state>/run/``
(the same machinery as the serving stack, so ``down`` works from any shell and a crash of the
caller orphans nothing):

1. ``platform-mlflow``: ``mlflow server`` on ``serving.mlflow_port`` (5000) with the SQLite file
   ``<state>/mlflow.db`` (the same file the ``local`` profile uses without a server) and artifacts
   under the settings' artifact location (``<state>/mlartifacts``), ``--workers 1``, webhooks
   allowed to loopback, and a Fernet key kept in ``<state>/platform/mlflow-webhook-key`` (0600) so
   a restarted server can still decrypt the stored webhook secret;
2. ``platform-prefect``: ``prefect server start`` on ``serving.prefect_port`` (4200) with
   ``PREFECT_HOME=<state>/prefect`` (the user's ``~/.prefect`` is never touched);
3. the work pools of ``prefect.yaml`` (its deployments' pools, else ``prefect.toml``'s default;
   created if missing) and ``prefect --no-prompt deploy
   --all`` from the checkout (when the Prefect server was just started or a deployment is missing),
   then the ``canary-monitor`` schedule set to the policy's ``rollout.tick_interval`` (at least
   :data:`MIN_MONITOR_INTERVAL_S`): the policy documents that field as the monitor's schedule;
4. ``platform-worker``: ``prefect worker start`` on that pool (stopped with SIGINT: a Prefect
   worker may ignore SIGTERM);
5. ``platform-webhook``: ``mlcanary webhook`` on ``serving.webhook_port`` with
   ``MLCANARY_WEBHOOK_SECRET`` (taken from the environment, else generated once into
   ``<state>/platform/webhook-secret``, 0600; never printed, never in an argv);
6. the MLflow webhook registered (:func:`mlcanary.triggers.registration.register_webhook`) to the receiver;
7. the serving stack (:func:`mlcanary.serving.local.stack.up`) once ``@champion`` exists.

Every component (the worker's flow runs, the receiver, the model servers) sees the same settings,
pointed at the MLflow *server* (a direct ``sqlite:///`` URI fires no webhook): they are passed as
``MLCANARY_*`` overrides on top of the ``local`` profile (:func:`settings_env`), which is what the
deployments load. The same variables, plus ``PREFECT_API_URL``, ``PREFECT_HOME`` and
``MLFLOW_TRACKING_URI``, are written to ``<state>/platform.env`` for the user to ``source``.

``down`` stops the worker first (so no flow run starts anything more), then the receiver, then the
serving stack and the servers. Prefect and MLflow run as subprocesses of the CLIs installed beside
this Python; ``mlcanary`` itself never imports Prefect.

The package's modules, lowest first (none imports one listed after it):

- :mod:`~mlcanary.platform.errors`: :class:`PlatformError`;
- :mod:`~mlcanary.platform.paths`: the component names, :func:`repo_root`, :class:`PlatformPaths`;
- :mod:`~mlcanary.platform.settings_env`: :func:`platform_settings`, :func:`settings_env`,
  :func:`child_env` and the env file;
- :mod:`~mlcanary.platform.private_files`: the 0600 files (webhook secret, MLflow Fernet key);
- :mod:`~mlcanary.platform.servers`: argv, start / health / stop of one platform process;
- :mod:`~mlcanary.runtime.process_tree`: descendants of a process and stopping their groups;
- :mod:`~mlcanary.platform.prefect_yaml`: deployments and work pools declared in ``prefect.yaml``;
- :mod:`~mlcanary.platform.prefect_api`: the Prefect server's REST API and the ``prefect`` CLI;
- :mod:`~mlcanary.platform.lifecycle`: :func:`up`, :func:`down`, :func:`status`.

This package re-exports their public names, so ``from mlcanary.platform import X`` works for all.
"""

from __future__ import annotations

from mlcanary.platform.errors import PlatformError
from mlcanary.platform.lifecycle import ComponentState, PlatformInfo, down, status, up
from mlcanary.platform.paths import COMPONENTS, MLFLOW, PREFECT, WEBHOOK, WORKER, PlatformPaths, repo_root
from mlcanary.platform.prefect_api import MIN_MONITOR_INTERVAL_S, MONITOR_DEPLOYMENT, align_monitor_schedule
from mlcanary.platform.prefect_yaml import deployment_names, work_pool_names
from mlcanary.platform.private_files import ensure_secret_file, fernet_key
from mlcanary.platform.servers import (
    mlflow_server_argv,
    mlflow_server_env,
    prefect_server_argv,
    start_mlflow_server,
    start_prefect_server,
    stop_component,
    wait_healthy,
    webhook_argv,
    worker_argv,
)
from mlcanary.platform.settings_env import (
    child_env,
    env_file_vars,
    platform_settings,
    settings_env,
    write_env_file,
)
from mlcanary.runtime.process_tree import descendants

__all__ = [
    "COMPONENTS",
    "MIN_MONITOR_INTERVAL_S",
    "MLFLOW",
    "MONITOR_DEPLOYMENT",
    "PREFECT",
    "WEBHOOK",
    "WORKER",
    "ComponentState",
    "PlatformError",
    "PlatformInfo",
    "PlatformPaths",
    "align_monitor_schedule",
    "child_env",
    "deployment_names",
    "descendants",
    "down",
    "ensure_secret_file",
    "env_file_vars",
    "fernet_key",
    "mlflow_server_argv",
    "mlflow_server_env",
    "platform_settings",
    "prefect_server_argv",
    "repo_root",
    "settings_env",
    "start_mlflow_server",
    "start_prefect_server",
    "status",
    "stop_component",
    "up",
    "wait_healthy",
    "webhook_argv",
    "work_pool_names",
    "worker_argv",
    "write_env_file",
]
