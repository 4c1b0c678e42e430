"""One training run: its config, the loop, checkpoints and the files a run leaves."""
