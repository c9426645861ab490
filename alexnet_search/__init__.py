"""alexnet-search: Hyperband search over AlexNet's hyperparameters on CIFAR-10, with Keras Tuner."""

__version__ = "0.1.0"
