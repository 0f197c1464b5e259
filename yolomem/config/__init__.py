"""What the user asked for: the settings and their one ``key=value`` parser, GPUs, models, datasets."""
