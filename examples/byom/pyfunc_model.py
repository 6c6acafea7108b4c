"""A pyfunc model of your own: log it, register it, make it @candidate (README, "Bring your own model")."""

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from mlcanary.data.synthetic import FEATURES, generate_transactions


class AmountRule(mlflow.pyfunc.PythonModel):
    """Flags large night-time amounts; answers a label and a probability column per row."""

    def predict(self, context, model_input, params=None):
        risk = (model_input["amount"] - 300) / 150 + (model_input["hour"] < 6)
        probability = 1 / (1 + np.exp(-risk))
        return pd.DataFrame({"label": (probability >= 0.5).astype(int), "probability": probability})


mlflow.set_tracking_uri("sqlite:///.mlcanary/mlflow.db")  # the local profile's registry
X = generate_transactions(1000, seed=7)[list(FEATURES)]  # the champion's input columns
model = AmountRule()
with mlflow.start_run():
    logged = mlflow.pyfunc.log_model(
        name="model",
        python_model=model,
        signature=infer_signature(X, model.predict(None, X)),  # inputs come from the signature
        registered_model_name="fraud-detector",
        pip_requirements=["mlflow", "pandas", "numpy"],  # optional: spares MLflow inferring them
    )
version = logged.registered_model_version
MlflowClient().set_registered_model_alias("fraud-detector", "candidate", version)
print(f"fraud-detector v{version} is @candidate")
