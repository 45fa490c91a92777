"""Data for fast CIFAR-10 training: sources, tf.data and device-resident feeds, on-device augmentation."""
