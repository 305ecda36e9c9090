"""The one exception type the CLI turns into a clean one-line error."""


def one_line(text: object) -> str:
    """``text`` (a message or an exception) on one line: every run of whitespace, newlines too, one space."""
    return " ".join(str(text).split())


class MiniCNNError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line."""


class DataError(MiniCNNError):
    """CIFAR-10 is missing, corrupt or cannot be read."""


class CheckpointError(MiniCNNError):
    """A file is not a minicnn checkpoint or results file, or does not match the configuration."""
