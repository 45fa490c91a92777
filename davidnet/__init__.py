"""DavidNet: fast CIFAR-10 training with Keras 3 (models, LR callbacks, timing, training)."""
