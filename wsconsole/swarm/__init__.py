"""Many simulated clients with loss, duplication and order accounting."""
