"""One dock panel per module, each given its model in the constructor."""
