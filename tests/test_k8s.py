"""launcher: k8s: pod_run_kwargs fed into dagster-k8s's real build_pod_body / PipesK8sClient.run
(the Kubernetes API is faked; nothing reaches a cluster)."""

from contextlib import nullcontext

import dagster as dg
import kubernetes.client as k8s
import pytest
from dagster_k8s import PipesK8sClient
from dagster_k8s import pipes as k8s_pipes
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR, decode_param

from assets_defs.launch import WORKER_MODULE
from salmon_dag.config import ProfileError, SFTStageConfig, load_profile
from salmon_dag.launch.command import accelerate_command
from salmon_dag.launch.k8s import pod_run_kwargs

# the command a k8s launch of a 4-GPU SFT stage runs (assets_defs.launch builds it the same way)
COMMAND = accelerate_command(SFTStageConfig(launcher="k8s", num_processes=4),
                             "/data/warehouse/.dagster/launch/sft/job.json", "cuda", WORKER_MODULE,
                             python="python")
KUBE = {
    "image": "registry.example/salmon:1.0",
    "namespace": "rlhf",
    "image_pull_policy": "Always",
    "service_account_name": "salmon-trainer",
    "cpu": "32",
    "memory": "256Gi",
    "shm_size": "32Gi",
    "working_dir": "/srv/salmon",
    "env": {"HF_HOME": "/data/hf", "NCCL_DEBUG": "WARN"},
    "node_selector": {"gpu": "h100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "volumes": [
        {"name": "warehouse", "mount_path": "/data", "claim_name": "salmon-pvc"},
        {"name": "models", "mount_path": "/models", "host_path": "/mnt/models", "read_only": True},
    ],
}


def _profile(kube: dict | None = None, **sft):
    return load_profile("tiny", {"kubernetes": KUBE if kube is None else kube,
                                 "sft": {"launcher": "k8s", "num_processes": 4, **sft}})


def _kwargs(profile, **kw):
    return pod_run_kwargs(profile.kubernetes, COMMAND, {"NCCL_DEBUG": "INFO", "SALMON_STAGE": "sft"},
                          profile.sft.num_processes, **kw)


def _pod(kwargs: dict, bootstrap: dict[str, str] | None = None) -> k8s.V1Pod:
    # the env_vars merge PipesK8sClient.run does: bootstrap, then the client's env, then run(env=)
    return k8s_pipes.build_pod_body(
        pod_name="salmon-sft", image=kwargs["image"], command=kwargs["command"],
        env_vars={**(bootstrap or {}), **kwargs["env"]},
        base_pod_meta=kwargs["base_pod_meta"], base_pod_spec=kwargs["base_pod_spec"],
    )


def _env(container: k8s.V1Container) -> dict[str, str]:
    names = [e.name for e in container.env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e.name: e.value for e in container.env}


def test_kwargs_are_exactly_pipes_k8s_client_run_parameters():
    import inspect

    params = inspect.signature(PipesK8sClient.run).parameters
    kwargs = _kwargs(_profile())
    assert set(kwargs) <= set(params) - {"context"}
    assert set(kwargs) == {"image", "command", "namespace", "env", "base_pod_meta", "base_pod_spec"}


def test_build_pod_body_gives_the_training_pod():
    profile = _profile()
    kwargs = _kwargs(profile, labels={"salmon/stage": "sft"})
    pod = _pod(kwargs, {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"})
    assert isinstance(pod, k8s.V1Pod) and kwargs["namespace"] == "rlhf"

    labels = pod.metadata.labels
    assert labels["app.kubernetes.io/name"] == "salmon" and labels["salmon/stage"] == "sft"
    assert labels["app.kubernetes.io/part-of"] == "dagster"  # dagster-k8s's labels stay underneath

    spec = pod.spec
    assert spec.restart_policy == "Never"
    assert spec.service_account_name == "salmon-trainer"
    assert spec.node_selector == {"gpu": "h100"}
    assert [(t.key, t.operator, t.effect) for t in spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]

    [c] = spec.containers
    assert c.image == "registry.example/salmon:1.0" and c.command == COMMAND
    assert c.working_dir == "/srv/salmon" and c.image_pull_policy == "Always"
    assert _env(c) == {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg", "HF_HOME": "/data/hf",
                       "NCCL_DEBUG": "INFO", "SALMON_STAGE": "sft"}  # the stage's env wins over the profile's
    assert c.resources.limits == {"nvidia.com/gpu": str(profile.sft.num_processes), "cpu": "32", "memory": "256Gi"}
    assert c.resources.requests == {"cpu": "32", "memory": "256Gi"}

    vols = {v.name: v for v in spec.volumes}
    assert vols["warehouse"].persistent_volume_claim.claim_name == "salmon-pvc"
    assert not vols["warehouse"].persistent_volume_claim.read_only and vols["warehouse"].host_path is None
    assert vols["models"].host_path.path == "/mnt/models" and vols["models"].persistent_volume_claim is None
    [shm] = [v for v in spec.volumes if v.empty_dir is not None]
    assert (shm.empty_dir.medium, shm.empty_dir.size_limit) == ("Memory", "32Gi")
    mounts = {m.mount_path: m for m in c.volume_mounts}
    assert set(mounts) == {"/data", "/models", "/dev/shm"}
    assert mounts["/data"].name == "warehouse" and not mounts["/data"].read_only
    assert mounts["/models"].name == "models" and mounts["/models"].read_only
    assert mounts["/dev/shm"].name == shm.name


def test_minimal_config_and_cpu_only_pod():
    profile = _profile({"image": "salmon:dev", "shm_size": None}, num_processes=1)
    kwargs = pod_run_kwargs(profile.kubernetes, ["true"], {}, 0)
    pod = _pod(kwargs)
    [c] = pod.spec.containers
    assert kwargs["namespace"] == "default" and c.image_pull_policy == "IfNotPresent" and c.working_dir == "/app"
    assert c.resources is None and c.env == [] and c.volume_mounts == [] and pod.spec.volumes == []
    assert pod.spec.service_account_name is None and pod.spec.node_selector is None and pod.spec.tolerations is None
    # the default shm_size still mounts /dev/shm; a GPU count uses the configured resource name
    other = _pod(pod_run_kwargs(_profile({"image": "i", "gpu_resource": "amd.com/gpu"}).kubernetes, ["x"], {}, 2))
    [c] = other.spec.containers
    assert c.resources.limits == {"amd.com/gpu": "2"} and c.resources.requests is None
    assert [(m.mount_path, v.empty_dir.size_limit) for m, v in zip(c.volume_mounts, other.spec.volumes)] == [
        ("/dev/shm", "16Gi")
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dagster-k8s's own context.run_id / .op calls
def test_pipes_k8s_client_run_creates_the_pod_with_the_pipes_bootstrap_env(monkeypatch):
    created: list[tuple[str, k8s.V1Pod]] = []

    class FakeCoreApi:
        def create_namespaced_pod(self, namespace, body):
            created.append((namespace, body))

        def delete_namespaced_pod(self, name, namespace):
            pass

    class FakeClient:
        core_api = FakeCoreApi()

        def wait_for_pod(self, *args, **kwargs):
            pass

    monkeypatch.setattr(PipesK8sClient, "_load_k8s_config", lambda self: None)
    monkeypatch.setattr(PipesK8sClient, "consume_pod_logs", lambda self, **kw: nullcontext())
    monkeypatch.setattr(k8s_pipes.DagsterKubernetesClient, "production_client", staticmethod(FakeClient))
    kwargs = _kwargs(_profile())

    @dg.asset
    def sft_model(context: dg.AssetExecutionContext, k8s_client: PipesK8sClient) -> dg.MaterializeResult:
        k8s_client.run(context=context, **kwargs)  # the fake pod reports nothing back
        return dg.MaterializeResult()

    client = PipesK8sClient(env={"FROM_CLIENT": "1", "SALMON_STAGE": "client"})
    assert dg.materialize([sft_model], resources={"k8s_client": client}).success

    [(namespace, pod)] = created
    [c] = pod.spec.containers
    env = _env(c)
    assert namespace == "rlhf" and c.image == KUBE["image"] and c.command == COMMAND
    assert env["SALMON_STAGE"] == "sft" and env["FROM_CLIENT"] == "1" and env["NCCL_DEBUG"] == "INFO"
    assert decode_param(env[DAGSTER_PIPES_MESSAGES_ENV_VAR]) == {"stdio": "stderr"}  # messages via pod logs
    assert decode_param(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])["data"]["asset_keys"] == ["sft_model"]  # context inline
    assert c.resources.limits["nvidia.com/gpu"] == "4"


def test_k8s_launcher_without_image_fails_to_load():
    with pytest.raises(ProfileError, match=r"kubernetes\.image"):
        load_profile("tiny", {"sft": {"launcher": "k8s", "num_processes": 2}})
    with pytest.raises(ValueError, match=r"kubernetes\.image"):
        pod_run_kwargs(load_profile("tiny").kubernetes, ["x"], {}, 1)


@pytest.mark.parametrize("volume", [
    {"name": "both", "mount_path": "/d", "claim_name": "pvc", "host_path": "/mnt"},
    {"name": "neither", "mount_path": "/d"},
])
def test_volume_needs_exactly_one_source(volume):
    with pytest.raises(ProfileError, match="exactly one of claim_name and host_path"):
        _profile({**KUBE, "volumes": [volume]})


def test_negative_gpus_and_reserved_volume_name_are_rejected():
    with pytest.raises(ValueError, match="gpus must be >= 0"):
        pod_run_kwargs(_profile().kubernetes, COMMAND, {}, -1)
    clash = {**KUBE, "volumes": [{"name": "salmon-shm", "mount_path": "/x", "host_path": "/x"}]}
    with pytest.raises(ValueError, match="reserved"):
        pod_run_kwargs(_profile(clash).kubernetes, COMMAND, {}, 1)
