"""Training infrastructure that writes the checkpoints birdassets benchmarks (Flax NNX, optax, Orbax)."""
