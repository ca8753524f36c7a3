"""Git in, versions out: the source, builds, versions, the reconciler, canaries, pins and the journal."""
