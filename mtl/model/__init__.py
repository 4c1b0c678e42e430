"""The network: HydraNet, backbones, the frozen prefix, per-task losses and metrics."""
