"""The wire: how nodes meet. The work dir (fsspec, atomic signed writes, bounded validated reads), the
shared files as pydantic models, rendezvous, the watch of peers and the stop marker, and the control
channel with its node-side protocol."""
