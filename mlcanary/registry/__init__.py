"""The model registry adapter (MLflow): versions, aliases, tags, models and the release evidence."""
