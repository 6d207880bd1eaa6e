"""MD data: discovering trajectories, preparing datasets, reading training windows."""
