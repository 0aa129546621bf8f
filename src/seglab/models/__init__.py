"""The trainable model: smp network, losses, schedules and the LightningModule."""
