"""A scikit-learn pipeline with your own transformer (README, "Bring your own model")."""

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mlcanary.data.synthetic import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, generate_transactions


class Log1p(BaseEstimator, TransformerMixin):
    """Your own step: log1p of skewed amounts (saved with cloudpickle, class and all)."""

    def fit(self, x, y=None):
        return self

    def transform(self, x):
        return np.log1p(np.clip(np.asarray(x, dtype=float), 0, None))


data = generate_transactions(5000, seed=11)
X, y = data[list(FEATURES)], data["is_fraud"]
pipeline = make_pipeline(
    ColumnTransformer(
        [
            ("numeric", Log1p(), list(NUMERIC_FEATURES)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
        ]
    ),
    HistGradientBoostingClassifier(max_iter=50, random_state=0),
).fit(X, y)

mlflow.set_tracking_uri("sqlite:///.mlcanary/mlflow.db")
with mlflow.start_run():
    logged = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        serialization_format="cloudpickle",  # or "skops" with skops_trusted_types=[...]
        signature=infer_signature(X, pipeline.predict(X)),
        registered_model_name="fraud-detector",
        pip_requirements=["mlflow", "scikit-learn"],
    )
version = logged.registered_model_version
MlflowClient().set_registered_model_alias("fraud-detector", "candidate", version)
print(f"fraud-detector v{version} is @candidate")
