"""The Qt console: a thin layer over core, harness, faults, swarm and scenarios."""
