"""One module per engine (``command``, ``dask``, ``pytorch``, ``tensorflow``, ``horovod``, ``ray``),
each holding its node-side provider (the hooks that start the engine's real processes), its spec
builder, its constants and the validators both sides call. ``_engine`` holds the two halves every
engine fills in, ``_common`` the shared rules and helpers; the other ``_`` modules are small
programs an engine runs (Horovod's host discovery, Ray's node probe, a TensorFlow server)."""
