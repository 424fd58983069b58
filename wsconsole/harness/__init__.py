"""The local cluster: broker, nodes and balancer as OS processes, run by a supervisor."""
