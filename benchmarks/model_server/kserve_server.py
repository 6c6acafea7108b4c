"""The reference: KServe's Python model server serving the same MLflow model version.

A small ``kserve.Model`` subclass, as a KServe user writes one for a scikit-learn pipeline that
takes named columns (KServe's prebuilt sklearnserver turns V1 instances into a NumPy array, which
a ``ColumnTransformer`` over column names refuses): it loads the version with
``mlflow.sklearn.load_model`` and answers V1 ``instances`` (objects of features) with
``predict_proba`` of a DataFrame of them. Everything else is KServe's default ``ModelServer``
(one uvicorn worker, its request latency logging) except gRPC, turned off so that only the
HTTP port is bound.

``python -m benchmarks.model_server.kserve_server --port P --tracking-uri URI --name NAME --version V``
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_server.kserve_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    # kserve parses sys.argv when imported: give it only its own program name.
    sys.argv = sys.argv[:1]
    import kserve
    import mlflow
    import mlflow.sklearn
    import pandas as pd

    class FraudModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.model: Any = None

        def load(self) -> bool:
            mlflow.set_tracking_uri(args.tracking_uri)
            self.model = mlflow.sklearn.load_model(f"models:/{args.name}/{args.version}")
            self.ready = True
            return self.ready

        def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
            frame = pd.DataFrame(payload["instances"])
            return {"predictions": self.model.predict_proba(frame).tolist()}

    model = FraudModel(args.name)
    model.load()
    kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
