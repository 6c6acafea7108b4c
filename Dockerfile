# The image the flows (Prefect Kubernetes jobs), the collector, the webhook receiver and the MLflow
# server of deploy/k8s run from. Build: docker build -t mlcanary:0.1.0 .   (kind: kind load docker-image)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

WORKDIR /app
# Dependencies first (cached while only the code changes): the lock, plus the cluster extra
# (PostgreSQL driver, S3 access for MLflow artifacts) at the ranges pyproject.toml names.
COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock "psycopg[binary]>=3.2,<4" "boto3>=1.34,<2"

COPY README.md prefect.yaml prefect.toml ./
COPY mlcanary mlcanary
COPY models models
COPY tasks tasks
COPY flows flows
COPY configs configs
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 mlcanary \
    && mkdir -p /tmp/mlcanary && chown mlcanary /tmp/mlcanary
USER 10001

ENV MLCANARY_PROFILE=kserve MLCANARY_CONFIG_DIR=/app/configs MLCANARY_STATE_DIR=/tmp/mlcanary
CMD ["mlcanary", "--help"]
