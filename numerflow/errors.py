"""numerflow's expected failures. The CLI (cli/errors.py) alone turns them into one `Error: ...` line and exit 1."""


class NumerflowError(Exception):
    """An expected failure the user can act on (bad input, missing file, refused action)."""


class DataError(NumerflowError):
    """A data file is missing, unreadable or not in the Numerai layout."""


class ConfigError(NumerflowError):
    """An option or setting is invalid in a way only known at run time."""


class OptionError(ConfigError):
    """One option's value is refused (`--lr: must be a number above 0`): on the command line a
    usage error naming the option (exit 2)."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option}: {problem}")
        self.option, self.problem = option, problem


class CheckpointError(NumerflowError):
    """A checkpoint is missing, corrupt, or does not fit the data."""


class ApiError(NumerflowError):
    """Numerai's API failed or refused (after retries where that makes sense)."""


class AuthError(ApiError):
    """Credentials are missing or rejected."""


class SubmissionError(NumerflowError):
    """A submission file fails Numerai's checks, or submitting is refused."""


class Interrupted(NumerflowError):
    """The user stopped a run (Ctrl-C) where it can be continued: the CLI prints the message as it
    is (it says how to continue) and exits 130, the shell's code for SIGINT."""

    exit_code = 130
