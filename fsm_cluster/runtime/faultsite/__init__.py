"""The folder an entry script gets on its PYTHONPATH for faulthandler stacks (see sitecustomize.py)."""
