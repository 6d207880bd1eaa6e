"""Training: config, batches -> losses, LightningModule/DataModule, run and model export."""
