"""The TiDHy family: timescale-demixing hypernetwork dynamics (Abe et al., bioRxiv 2025) in Flax NNX."""
