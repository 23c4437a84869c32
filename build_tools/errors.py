"""Error classes of the builder, each with its own exit code.

Library code raises these; only ``cli.main`` catches them, prints the message and
returns the code (the cibuildwheel habit), so nothing deep inside calls ``sys.exit``.
"""
from __future__ import annotations


class BuildToolError(Exception):
    """Base class; ``exit_code`` is what ``main()`` returns for it."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# A message lists at most this many problems, each cut to PROBLEM_CHARS: 10,000 bad devices or 60,000
# unknown keys must not print megabytes (the first ones say what is wrong; ``problems`` keeps them all).
MAX_LISTED = 20
PROBLEM_CHARS = 500


def _bounded(problem: str) -> str:
    return problem if len(problem) <= PROBLEM_CHARS else problem[:PROBLEM_CHARS] + f"... ({len(problem):,} characters)"


class ConfigError(BuildToolError):
    """Bad input: matrix.yaml, a device list, a command-line value. Nothing has been written."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = _bounded(self.problems[0])
        else:
            shown = [f"  - {_bounded(p)}" for p in self.problems[:MAX_LISTED]]
            if len(self.problems) > MAX_LISTED:
                shown.append(f"  ... and {len(self.problems) - MAX_LISTED:,} more (fix these first)")
            text = f"{len(self.problems):,} problems:\n" + "\n".join(shown)
        super().__init__(text)


class ToolchainMissingError(ConfigError):
    """A required program is not installed; the message names the package that provides it."""


class CompileError(BuildToolError):
    """A device compiler failed for one (kernel, device) pair."""

    exit_code = 3


class BazelError(BuildToolError):
    """Bazel itself failed (not a compiler inside it)."""

    exit_code = 4


class RepairError(BuildToolError):
    """auditwheel repair failed or produced something unexpected."""

    exit_code = 5


class BudgetError(BuildToolError):
    """A wheel is over its size budget, or grew past ``sizes.max_growth``, and the gate is on
    (``--fail-on-budget`` or ``sizes.fail_on_budget``). The wheels and reports are already written:
    the budget is a policy gate on good wheels, not a build failure."""

    exit_code = 6


class MergeError(BuildToolError):
    """``build.py merge`` refused its input wheels (tampered, mismatched or unsafe); nothing was written."""

    exit_code = 7


class WheelRefused(BuildToolError):
    """An input wheel is not proved to be a wheel of this build (build_tools/wheelread/). Raised inside the
    reader only: ``wheelread.prove`` turns it into the error class of the command that read the wheel
    (``merge`` 7, ``variant``/``indexes``/``repair``/``sizes`` 2), so each command keeps the exit code its
    table gives; this class's own code is never what a command returns."""

    exit_code = 7


class GatherError(BuildToolError):
    """``build.py gather`` refused its image sets (damaged, conflicting, missing); nothing was written."""

    exit_code = 9


class SiteError(BuildToolError):
    """``build.py indexes``: dumb-pypi failed to write a flavour's index; nothing was written."""

    exit_code = 11


class HostBuildError(BuildToolError):
    """The C compiler failed on a host extension (src/aotkernels/_*.c)."""

    exit_code = 8


class RehearsalError(BuildToolError):
    """The release rehearsal (build_tools/release/rehearse/) failed; ``step`` names the release step that
    failed (an image build, the configuration check, or cibuildwheel's before-all, build, repair or
    test step, or a step after the container), ``log`` the file that holds its output."""

    exit_code = 10

    def __init__(self, step: str, message: str, log: str | None = None) -> None:
        self.step = step
        self.log = log
        super().__init__(f"rehearsal: {step} failed: {message}" + (f" (log: {log})" if log else ""))
