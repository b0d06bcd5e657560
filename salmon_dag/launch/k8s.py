"""The training pod for ``launcher: k8s``, as the keyword arguments of dagster-k8s's
``PipesK8sClient.run``.

Plain dicts only: salmon_dag does not import Dagster (nor dagster-k8s or the kubernetes client);
the Dagster layer passes these to the client. ``build_pod_body`` (dagster_k8s.pipes) accepts
snake_case or camelCase keys; it sets ``image`` and ``command`` on ``containers[0]`` (the only
container, so the Pipes bootstrap env lands in the process we launch), appends ``env`` plus the
Pipes bootstrap variables to that container's env, names it when unnamed, and merges its own
``app.kubernetes.io/*`` labels under ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from salmon_dag.config import KubernetesConfig

SHM_VOLUME = "salmon-shm"
NAME_LABEL = "app.kubernetes.io/name"


def pod_run_kwargs(
    cfg: KubernetesConfig,
    command: list[str],
    env: Mapping[str, str],
    gpus: int,
    *,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``PipesK8sClient.run(context=..., **kwargs)`` that run ``command`` in
    one pod of ``cfg.image`` with ``gpus`` GPUs of ``cfg.gpu_resource``.

    Returns ``image``, ``command``, ``namespace``, ``env`` (``cfg.env`` updated with ``env``),
    ``base_pod_meta`` (labels: ``app.kubernetes.io/name: salmon`` plus ``labels``) and
    ``base_pod_spec`` (snake_case: one container with resources, working dir, pull policy and
    volume mounts; PVC / host-path volumes, a memory-backed ``/dev/shm`` of ``cfg.shm_size``,
    node selector, tolerations, service account, ``restart_policy: Never``).

    Raises ValueError when ``cfg.image`` is unset, ``gpus`` is negative, or a profile volume is
    named like the shm volume.
    """
    if cfg.image is None:
        raise ValueError("launcher 'k8s' needs kubernetes.image (an image with this project installed)")
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")

    # requests = limits for cpu/memory (Guaranteed QoS: the pod is not evicted mid-training);
    # extended resources such as GPUs only need a limit (Kubernetes copies it to requests)
    fixed = {k: v for k, v in (("cpu", cfg.cpu), ("memory", cfg.memory)) if v is not None}
    limits = {**fixed, **({cfg.gpu_resource: str(gpus)} if gpus > 0 else {})}
    resources: dict[str, Any] = {}
    if fixed:
        resources["requests"] = dict(fixed)
    if limits:
        resources["limits"] = limits

    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for vol in cfg.volumes:
        if vol.name == SHM_VOLUME:
            raise ValueError(f"kubernetes.volumes: the name {SHM_VOLUME!r} is reserved for /dev/shm")
        source = (
            {"persistent_volume_claim": {"claim_name": vol.claim_name, "read_only": vol.read_only}}
            if vol.claim_name is not None
            else {"host_path": {"path": vol.host_path}}
        )
        volumes.append({"name": vol.name, **source})
        mounts.append({"name": vol.name, "mount_path": vol.mount_path, "read_only": vol.read_only})
    if cfg.shm_size is not None:
        # the container runtime's /dev/shm is 64 MiB: too small for NCCL and DataLoader workers
        volumes.append({"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": cfg.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mount_path": "/dev/shm"})

    # no image/command/env here: run() puts them on containers[0] (env appended after the Pipes vars)
    container: dict[str, Any] = {
        "working_dir": cfg.working_dir,
        "image_pull_policy": cfg.image_pull_policy,
        "volume_mounts": mounts,
    }
    if resources:
        container["resources"] = resources

    spec: dict[str, Any] = {"containers": [container], "volumes": volumes, "restart_policy": "Never"}
    if cfg.node_selector:
        spec["node_selector"] = dict(cfg.node_selector)
    if cfg.tolerations:
        spec["tolerations"] = [dict(t) for t in cfg.tolerations]  # copies: the profile is frozen
    if cfg.service_account_name is not None:
        spec["service_account_name"] = cfg.service_account_name

    return {
        "image": cfg.image,
        "command": list(command),
        "namespace": cfg.namespace,
        "env": {**cfg.env, **env},
        "base_pod_meta": {"labels": {NAME_LABEL: "salmon", **(labels or {})}},
        "base_pod_spec": spec,
    }
