"""Static checks of a working tree: flow documents, the routing file and contracts -> problems."""
