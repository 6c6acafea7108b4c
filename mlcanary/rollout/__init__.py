"""Rollout engine: phases, policy, the pure judge and the statistics behind it."""
