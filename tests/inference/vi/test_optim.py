"""``stepper``: fused Adam stepped through its kernel directly gives exactly
``optimizer.step()``'s params and state (weight decay, an LR schedule, a param without a
grad on one step); any other optimizer or option keeps ``optimizer.step``."""

import torch

from ppl.inference.vi.optim import stepper


def _train(direct: bool) -> tuple[list[torch.Tensor], dict]:
    generator = torch.Generator().manual_seed(0)
    leaves = [torch.randn(3, generator=generator).requires_grad_(),
              torch.randn(2, 2, generator=generator).requires_grad_()]
    optimizer = torch.optim.Adam(leaves, lr=0.1, weight_decay=0.01, fused=True)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
    step = stepper(optimizer) if direct else optimizer.step
    for k in range(8):
        for i, leaf in enumerate(leaves):
            leaf.grad = None if (k, i) == (4, 1) else torch.randn(leaf.shape, generator=generator)
        step()
        schedule.step()
    return leaves, optimizer.state_dict()


def test_the_direct_fused_adam_step_equals_optimizer_step():
    (mine, my_state), (torchs, torch_state) = _train(True), _train(False)
    for a, b in zip(mine, torchs, strict=True):
        assert torch.equal(a, b)
    for k, state in torch_state["state"].items():
        for name, value in state.items():
            assert torch.equal(my_state["state"][k][name], value), name


def test_other_optimizers_and_options_keep_optimizer_step():
    leaf = torch.zeros(2, requires_grad=True)
    for optimizer in (torch.optim.SGD([leaf], lr=0.1),
                      torch.optim.Adam([leaf], amsgrad=True, fused=True),
                      torch.optim.Adam([leaf], foreach=True)):
        assert stepper(optimizer) == optimizer.step
