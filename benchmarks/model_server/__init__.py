"""Model-server benchmark: ours beside KServe's Python model server, our Envoy beside a minimal one.

One run, on free ports of 127.0.0.1, in a temporary state directory:

1. trains one version of the fraud model (the ``local`` profile) into a fresh MLflow registry;
2. starts our model server (``python -m mlcanary.serving.local.model_server``, one process, no
   collector) and KServe's (``benchmarks/model_server/kserve_server.py``: ``kserve.ModelServer``
   with a small ``kserve.Model`` over the same version), both with one OpenMP thread;
3. sends V1 single-row requests from one lean client (``http_client.py``): sequentially over one
   connection, interleaved request by request; then closed loops of 8 and 32 connections, in
   alternating windows per server so both see the same background load;
4. checks every answer against a direct ``predict_proba`` of the same row (``checks.py``);
5. puts our Envoy (as the local stack renders it, 100 % to the champion) and a minimal Envoy (one
   static route and cluster, no access log) in front of our model server and measures the hop,
   the three paths interleaved request by request;
6. times the CLI: ``mlcanary --help``, every command's ``--help`` and ``mlcanary status``
   (``cli_timing.py``; bytecode cached as in a user's shell, and for reference without any);
7. prints the report (``report.py``) and, with ``--out``, rewrites its blocks of docs/benchmarks.md
   (``bench:model-server`` for 1-5, ``bench:cli`` for 6).

``--only cli`` trains one version and times the CLI alone (``make bench-cli``, about a minute);
``--smoke`` and ``--micro`` (no KServe, seconds) are the checks the test suites run.
Exits 1 if any answer differed from the direct prediction.
"""
