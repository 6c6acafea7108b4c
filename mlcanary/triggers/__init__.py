"""The MLflow registry webhook receiver: a signed ``@candidate`` event becomes a Prefect event."""
