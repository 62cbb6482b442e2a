"""Running the shell actions of the configuration.

Tokens
------
Before an action runs, the C daemon replaces the tokens ``CONNECT``, and in
vm context ``NAME``, ``VMID`` and ``UUID``, with their values pasted into the
command line. A domain name is chosen by whoever defines the VM, so pasting
it lets a name such as ``a;rm -rf ~`` run commands as root. Here a token is
replaced by a *reference* to an environment variable, in double quotes::

    NAME    -> "${VHOSTMD_VM_NAME}"
    VMID    -> "${VHOSTMD_VM_ID}"
    UUID    -> "${VHOSTMD_VM_UUID}"
    CONNECT -> --connect "${VHOSTMD_URI}"   (nothing without -c)

and the value travels in the environment. The shell never parses the result
of a parameter expansion as syntax, so no value can inject commands, whatever
quotes surround the token. Tokens are whole words: ``HOSTNAME`` is left alone
(the C daemon mangles it into ``HOST<name>``).

Limits
------
Each action runs in its own process group with a timeout; on timeout the whole
group is killed. Its output is capped. A bounded number run at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal

from ..model import Domain

#: Most bytes read from an action's standard output; the C daemon reads 256
#: (2048 for xml), which silently truncates. Larger output is an error here.
MAX_OUTPUT = 64 * 1024
#: Most bytes of standard error kept for the warning message.
MAX_STDERR = 512
#: Most actions running at once.
DEFAULT_CONCURRENCY = 8

_TOKENS = re.compile(r"\b(CONNECT|NAME|VMID|UUID)\b")
_VM_TOKENS = {
    "NAME": '"${VHOSTMD_VM_NAME}"',
    "VMID": '"${VHOSTMD_VM_ID}"',
    "UUID": '"${VHOSTMD_VM_UUID}"',
}


def substitute(action: str, domain: Domain | None, uri: str | None) -> tuple[str, dict[str, str]]:
    """Return the command line to run and the variables it needs in its environment."""
    env: dict[str, str] = {}
    if uri:
        env["VHOSTMD_URI"] = uri
    if domain is not None:
        env.update(
            VHOSTMD_VM_NAME=domain.name,
            VHOSTMD_VM_ID=str(domain.id),
            VHOSTMD_VM_UUID=domain.uuid,
        )

    def replace(match: re.Match) -> str:
        token = match.group(1)
        if token == "CONNECT":
            return '--connect "${VHOSTMD_URI}"' if uri else ""
        if domain is None:
            return token
        return _VM_TOKENS[token]

    return _TOKENS.sub(replace, action), env


class ActionFailed(Exception):
    """An action that gave no usable output; the message says why."""


class ActionRunner:
    """Runs actions through ``/bin/sh -c`` with a timeout, a cap and a pool."""

    def __init__(self, env: dict[str, str], concurrency: int = DEFAULT_CONCURRENCY):
        self._env = env
        self._concurrency = concurrency
        # Made in the running loop on first use: before Python 3.10 an
        # asyncio.Semaphore binds to the loop current at its creation.
        self._slots: asyncio.Semaphore | None = None
        #: Processes started since creation (shown by status and benchmarks).
        self.started = 0

    async def run(self, command: str, extra_env: dict[str, str], timeout: float) -> str:
        """Run *command*; return its standard output, or raise ActionFailed."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        async with self._slots:
            return await self._run(command, extra_env, timeout)

    async def _run(self, command: str, extra_env: dict[str, str], timeout: float) -> str:
        env = {**self._env, **extra_env} if extra_env else self._env
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            raise ActionFailed(f"cannot start /bin/sh: {err.strerror}") from None
        self.started += 1
        output = asyncio.gather(_read_stdout(proc), _read_stderr(proc.stderr))
        try:
            out, err = await asyncio.wait_for(output, timeout)
            status = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            raise ActionFailed(f"timed out after {timeout:g} s; its processes were killed") from None
        finally:
            # Also reached on cancellation (shutdown): nothing the action
            # started outlives it.
            _kill_group(proc)
            await _finish(proc, output)
        if out is None:
            raise ActionFailed(f"printed more than {MAX_OUTPUT} bytes")
        detail = (err or b"").decode(errors="replace").strip()
        if status != 0:
            why = f"exited with status {status}" if status > 0 else f"killed by signal {-status}"
            raise ActionFailed(why + (f": {detail}" if detail else ""))
        try:
            return out.decode()
        except UnicodeDecodeError:
            raise ActionFailed("printed bytes that are not UTF-8") from None


async def _read_stdout(proc: asyncio.subprocess.Process) -> bytes | None:
    """All of stdout, or None (and the action killed) past MAX_OUTPUT bytes."""
    data = bytearray()
    while chunk := await proc.stdout.read(65536):
        data += chunk
        if len(data) > MAX_OUTPUT:
            _kill_group(proc)
            return None
    return bytes(data)


async def _read_stderr(stream: asyncio.StreamReader) -> bytes:
    """The first MAX_STDERR bytes of stderr; the rest is read and dropped."""
    data = bytearray()
    while chunk := await stream.read(65536):
        if len(data) < MAX_STDERR:
            data += chunk[: MAX_STDERR - len(data)]
    return bytes(data)


async def _finish(proc: asyncio.subprocess.Process, output: asyncio.Future) -> None:
    """Reap the process, collect the readers' outcome and close the pipes now.

    Left to the garbage collector, a reader cancelled at shutdown is logged
    as "exception was never retrieved", and a pipe not read to its end (an
    action cut off at MAX_OUTPUT) is closed after the event loop, printing
    "Event loop is closed".
    """
    output.cancel()
    await asyncio.gather(output, return_exceptions=True)
    if proc.returncode is None:
        await proc.wait()
    # Process has no public close(); its transport closes the pipes (the
    # process has exited, so it kills nothing).
    proc._transport.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
