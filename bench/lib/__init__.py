"""The benchmark's library: corpus, targets, probes, and the single, compare and baseline runs."""
