"""The KServe + Istio serving backend (see :mod:`mlcanary.serving.kserve.backend`).

Pure parts: ``objects`` (names, annotations, modes), ``manifests`` (what is rendered and patched),
``observe`` (status → arms), ``storage`` (storage URIs). Impure: ``kube`` (the API with retries,
optimistic concurrency and watches), ``knative`` and ``standard`` (the two modes' sequences),
``backend`` (``KServeBackend``), ``arms`` (logger events → arms for the collector).
"""
