"""medgen.engine: what every trainer shares: the resumable batch stream and logger (`common`), optimiser and
learning-rate schedule (`optim`), checkpoints (`checkpoint`), EMA and gradient clipping (`state`), and
torch.distributed set-up (`distributed`). Each trainer lives beside what it trains."""
