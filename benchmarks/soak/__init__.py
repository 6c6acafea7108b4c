"""A soak of the real local stack through a whole release: steady load, weight changes, a rollback.

``python -m benchmarks.soak --rate N --minutes M [--out docs/benchmarks.md]`` trains a champion into
a temporary state directory (its own MLflow SQLite store and inference log), registers as the
candidate the same model behind :class:`models.faults.FaultyModel` (healthy for a number of model
calls, then failing 30 % of them: a dependency that breaks under load), brings the local stack up
(collector, Envoy, the champion's model server) on free ports and, for M minutes:

* a separate client process (the product's own open-loop replayer, ``mlcanary traffic``'s
  :func:`~mlcanary.demo.traffic.run.run_traffic`) sends N predictions per second and posts delayed
  labels to the collector, keeping one record per answer;
* the product's rollout engine (:func:`mlcanary.wiring.build_engine`, what ``mlcanary release`` and
  ``mlcanary step`` run) starts the canary at 5 % and ticks every few seconds: it steps up to 25 %
  and 50 % as the bake times pass, then rolls the candidate back once it turns bad (by hand at a
  deadline if it has not, which the report says);
* the resident memory of every process is sampled from ``/proc`` every 2 s.

Then every count is reconciled (:mod:`.reconcile`): the client's answers against Envoy's access log
request by request, the access log against Envoy's admin counters, every prediction a model server
answered against its row in the inference log, the collector's acknowledged events against the
halves stored, the labels acknowledged against the labels stored, and the payload loggers' drops
and failures. The report gives the failed requests by fault (the candidate's own 5xx, everything
else), the acknowledged events lost, and each process's RSS with its slope after the warm-up.
The exit status is 1 when anything did not reconcile, a request failed outside the candidate's
faults, or a process's memory was not flat.

One module per job: :mod:`.plan` (rate, duration, timeline, policy), :mod:`.client_worker` and
:mod:`.client` (the client process), :mod:`.release` (the candidate and the engine's timeline),
:mod:`.memory` (RSS samples and the flat verdict), :mod:`.counters` (reading every counter),
:mod:`.reconcile` (pure), :mod:`.run` (one soak) and :mod:`.report`. The stack is taken down and
the client process killed on exit, also after an error, Ctrl-C or SIGTERM.
"""
