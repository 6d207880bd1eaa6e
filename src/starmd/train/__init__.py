"""Training: batches -> losses, LightningModule/DataModule, distillation, run and model export
(the config and the model file itself: :mod:`starmd.modelfile`)."""
