"""Used by tests/test_ddp.py: a CFM whose loss is NaN on DDP rank 1 at step 50, the step of a divergence check
(rank 0 stays finite)."""
import torch

from lightning_fm.modules import CFMModule


class NaNOnRank1(CFMModule):
    def loss(self, batch):
        loss = super().loss(batch)
        if self.global_rank == 1 and self.global_step == 50:
            return loss * torch.tensor(float("nan"))
        return loss
