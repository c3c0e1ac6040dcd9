"""What a site's jobs get in their environment beyond its modules (model.job_env): one rule for the
notebook's job and its Dask workers."""

import pytest

from aifa_workbench.model.job_env import site_job_lines
from aifa_workbench.model.site import Environment

pytestmark = pytest.mark.unit
STACK = Environment("stack", "A module stack", ("module load x",))
IMAGE = Environment("image", "An image", ("module purge",), container="/appl/image.sif")


def test_lumi_jobs_name_the_slingshot_interfaces_and_set_both_miopen_variables():
    lines = "\n".join(site_job_lines("lumi", STACK, whole_node=False, gpus=1))
    assert "export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3" in lines
    assert 'MIOPEN_USER_DB_PATH="$cache_dir/miopen" MIOPEN_USER_DB="$cache_dir/miopen"' in lines
    assert "PYTHONNOUSERSITE" not in lines and "CUDA_VISIBLE_DEVICES" not in lines


@pytest.mark.parametrize(
    "whole_node, gpus, visible", [(True, 4, "export CUDA_VISIBLE_DEVICES=0,1,2,3"), (True, 0, None), (False, 2, None)]
)
def test_a_jupiter_job_on_a_node_of_its_own_sees_every_gpu_and_no_other_job_is_touched(whole_node, gpus, visible):
    lines = site_job_lines("jupiter", STACK, whole_node=whole_node, gpus=gpus)
    assert [line for line in lines if line.startswith("export")] == ([visible] if visible else [])


def test_an_image_keeps_the_users_local_packages_out_on_every_site():
    for family in ("lumi", "jupiter", "lucia"):
        assert "export PYTHONNOUSERSITE=1" in site_job_lines(family, IMAGE, whole_node=False, gpus=1)
    assert site_job_lines("lucia", STACK, whole_node=False, gpus=1) == []
