"""The results store: checked paths inside a results folder, atomic writes, checkpoints and result records."""
