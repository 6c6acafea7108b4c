"""Judgement benchmark of the shipped policy: the real ``decide()`` with ``configs/rollout.yaml`` (and
the demo profile), every check at once, on simulated canaries whose truth is known, beside
Flagger-, Kayenta- and fixed-window-style judges on the same streams (``python -m benchmarks.judge``).
"""
