"""Training: one Lightning loop for every model (engine, task), typed configs, presets chosen from the data, cross-validation, seed ensembles and fine-tuning on the same engine."""
