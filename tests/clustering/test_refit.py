"""Head B re-fitted on the frozen trunk: only head B changes, the lowest-loss re-fitted sub-heads are kept, and it
learns."""

import dataclasses

import pytest
import torch
from helpers import fit

from iic.clustering.config import ClusterConfig
from iic.clustering.data import load_cluster_data
from iic.clustering.module import ClusterDataModule, ClusterModule, evaluate_images, refit_head_b
from iic.config import config_to_dict

pytestmark = pytest.mark.slow  # trains, or runs the iic command

TINY = ClusterConfig(dataset="npz", k_b=3, k_a=6, num_subheads=2, epochs=6, batch_size=100, repeats=3, lr=0.004,
                     seed=0, refit_subheads=4, refit_epochs=4)


@pytest.fixture(scope="module")
def data(three_digit_npz):
    return load_cluster_data(dataclasses.replace(TINY, data_path=str(three_digit_npz)))


def test_refit_changes_only_head_b_and_keeps_each_trunks_lowest_loss_subheads(data):
    config = dataclasses.replace(TINY, trunks=2, refit_epochs=1)
    torch.manual_seed(0)
    module = ClusterModule(config_to_dict(config), data.channels, data.evaluation.num_classes)
    before = {name: value.clone() for name, value in module.state_dict().items()}

    refit = refit_head_b(module, ClusterDataModule(config, data, module).head_dataloader("B"))

    after = module.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".heads.B." in name or name == "subhead_loss_B" for name in changed), changed
    assert all(p.requires_grad for p in module.parameters())
    losses = module.subhead_loss("B")
    for t, tower in enumerate(module.net.towers):
        best = refit.losses[t].argsort()[:2].tolist()  # num_subheads of the 4 re-fitted ones
        assert torch.equal(losses[2 * t:2 * t + 2], refit.losses[t][best])
        for slot, index in enumerate(best):
            assert torch.equal(tower.heads["B"].subheads[slot].weight, refit.heads[t].weight[3 * index:3 * index + 3])
    assert module.reported_subhead("B") == int(losses.argmin())


def test_refit_learns_a_partition_on_a_trained_trunk(data, tmp_path):
    config = dataclasses.replace(TINY, refit_subheads=0, out_dir=str(tmp_path))
    module, _ = fit(config, data, tmp_path / "run")
    with torch.no_grad():  # a head B that puts every image in one cluster: the re-fit must not start from it
        for head in module.net.towers[0].heads["B"].subheads:
            head.weight.zero_()
            head.bias.zero_()
    assert evaluate_images(module, data.evaluation, accelerator="cpu")["B"]["reported"]["acc"] < 0.5

    module.config = dataclasses.replace(module.config, refit_subheads=TINY.refit_subheads)
    module.train()  # as a run re-fits it, straight after training (the run hands back its final model in eval mode)
    refit_head_b(module, ClusterDataModule(TINY, data, module).head_dataloader("B"))

    results = evaluate_images(module, data.evaluation, accelerator="cpu")
    assert results["B"]["reported"]["acc"] > 0.8
    assert results["B"]["subhead_losses"] == pytest.approx(module.subhead_loss("B").tolist())


def test_a_run_with_refit_reports_the_refitted_losses(data, tmp_path):
    config = dataclasses.replace(TINY, epochs=1, refit_epochs=1, out_dir=str(tmp_path))
    module, results = fit(config, data, tmp_path / "run")
    # Losses at λ = refit_lamb = 3, −I − 2H(z) − 2H(z′) < −2 ln 3 here, not the last pass's at λ = 1, −I ≥ −ln 3.
    assert max(results["B"]["subhead_losses"]) < -2 * torch.log(torch.tensor(3.0)).item()
    reloaded = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert torch.equal(reloaded["subhead_loss_B"], module.subhead_loss("B"))
