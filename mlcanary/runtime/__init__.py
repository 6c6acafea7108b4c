"""Generic process, network and HTTP helpers shared by serving and the platform (no domain knowledge)."""
