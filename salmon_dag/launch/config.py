"""The ``kubernetes`` section of a profile: the pod a stage with ``launcher: k8s`` trains in."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


class KubernetesVolume(_Strict):
    """A volume the training pod mounts: a PersistentVolumeClaim (``claim_name``) or a node path
    (``host_path``). The warehouse must be on one, mounted where the profile's paths point."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    mount_path: str
    claim_name: str | None = None
    host_path: str | None = None
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "KubernetesVolume":
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError(f"volume {self.name!r}: set exactly one of claim_name and host_path")
        return self


class KubernetesConfig(_Strict):
    """The pod a stage with ``launcher: k8s`` trains in (dagster-k8s ``PipesK8sClient``). The pod
    runs the same ``accelerate launch`` command as ``launcher: accelerate``; it requests
    ``num_processes`` GPUs of ``gpu_resource``."""

    # an image with this project installed (pip install '.[gpu]'), e.g. built from the repo
    image: str | None = None
    namespace: str = "default"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account_name: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    # requests = limits; None leaves them to the cluster's defaults
    cpu: str | None = None
    memory: str | None = None
    # /dev/shm as a memory-backed emptyDir: NCCL and data loaders need more than the default 64 MiB
    shm_size: str | None = "16Gi"
    # the project root inside the image (the command runs there)
    working_dir: str = "/app"
    # where the pod mounts the warehouse volume (None: the same path as where Dagster runs); job
    # files and results name warehouse paths relative to it, so the two may differ
    warehouse_mount: str | None = Field(default=None, pattern=r"^/")
    _HASH_NEUTRAL_WHEN_DEFAULT = ("warehouse_mount",)
    env: dict[str, str] = {}
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    volumes: list[KubernetesVolume] = []
