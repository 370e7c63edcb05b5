"""How many Ray actors, and whether they hold a GPU: from the options and the cluster's resources."""

from qsharp_ext.scale.ray_pool import wants_gpu, worker_count


def test_actors_hold_a_gpu_only_when_the_stage_and_the_cluster_have_one():
    assert wants_gpu("auto", {"CPU": 8, "GPU": 2}) and wants_gpu("cuda", {"GPU": 1})
    assert not wants_gpu("cpu", {"CPU": 8, "GPU": 2}) and not wants_gpu("auto", {"CPU": 8})


def test_one_worker_per_device_by_default_never_more_than_the_units():
    assert worker_count(None, units=10, per_gpu=True, cluster={"CPU": 16, "GPU": 4}) == 4
    assert worker_count(None, units=10, per_gpu=False, cluster={"CPU": 16, "GPU": 4}) == 10
    assert worker_count(None, units=3, per_gpu=False, cluster={"CPU": 2}) == 2
    assert worker_count(5, units=3, per_gpu=False, cluster={"CPU": 2}) == 3
    assert worker_count(1, units=3, per_gpu=False, cluster={"CPU": 2}) == 1
