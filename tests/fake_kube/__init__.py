"""A Kubernetes API server for tests that speaks the wire protocol, with KServe's controller played
in-process (see ``server.py`` and ``controller.py``) and objects validated against the real CRDs."""
