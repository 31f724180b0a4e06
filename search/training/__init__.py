"""Training one trial: the objective, fitting a TrialConfig, the feature cache of frozen
backbones and the weights check."""
