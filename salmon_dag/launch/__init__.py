"""Where a training stage runs: in the calling process, under ``accelerate launch`` with N ranks
(optionally DeepSpeed ZeRO), or in a Kubernetes pod running that same command.

``jobs`` describes a training run as a JSON-able :class:`~salmon_dag.launch.jobs.TrainJob` and runs
it (the same function in process and in every launched rank); ``command`` builds the
``accelerate launch`` command line; ``k8s`` the pod that runs it. Nothing here names a stage: a job
runs whatever :class:`salmon_dag.stage.TrainingStage` it names, and the caller names the module every
rank runs (the Dagster layer's Pipes worker). No dagster here.
"""
