"""The one exception type the CLI turns into a clean one-line error."""


class MiniCNNError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line."""


class DataError(MiniCNNError):
    """CIFAR-10 is missing, corrupt or cannot be read."""


class CheckpointError(MiniCNNError):
    """A file is not a minicnn checkpoint or results file, or does not match the configuration."""
