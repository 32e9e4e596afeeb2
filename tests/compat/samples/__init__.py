"""Helper files of tests/compat/test_sample_styles.py: one folder per oracle-ads sample (Dask,
PyTorch, TensorFlow, Horovod, Ray), each a provider module written here in that sample's style
(importing only fsm_cluster), the image's run script, its start scripts and the entry script the
cluster runs. A node is ``python run.py`` in that folder, its contract in its environment; the
folder is OCI__CODE_DIR (the samples' ``/code``) and on PYTHONPATH (the samples' /etc/datascience)."""
