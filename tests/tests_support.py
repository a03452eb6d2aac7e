"""Small configs shared by several test files."""

from train import vqvae

TINY_VQVAE = {
    "num_steps": 40, "log_every": 10, "checkpoint_every": 10, "data_limit": 256,
    "batch_size": 32, "eval_batch_size": 64, "num_codes": 16, "code_dim": 4,
    "channels": (8, 8), "res_hidden": 8, "num_res_blocks": 1, "num_images": 16,
    "quiet": True,
}


def tiny_vqvae_config(**over):
  c = vqvae.get_config()
  c.update({**TINY_VQVAE, **over})
  return c
