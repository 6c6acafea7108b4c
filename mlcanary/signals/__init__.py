"""Model-level signals for a tick: Evidently drift and paired agreement from the logged inputs."""
