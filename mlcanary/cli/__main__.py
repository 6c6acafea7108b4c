"""``python -m mlcanary.cli``: the command line (how the platform starts the webhook receiver)."""

from mlcanary.cli.main import app

if __name__ == "__main__":
    app()
