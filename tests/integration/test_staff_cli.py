"""``zhifu staff create``: the operator's bootstrap of staff accounts, on a scratch ZHIFU_HOME.

The password from standard input, a generated one shown once, a prompt on a
terminal; the new member signs in with it. Weak passwords, bad usernames and
names, unknown roles and duplicates are usage errors that change nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import click.testing
import pytest
from click.testing import CliRunner, Result

from zhifu.cli import main
from zhifu.config import load_settings
from zhifu.identity.access import SubjectKind
from zhifu.identity.errors import AuthenticationError
from zhifu.identity.staff import StaffView
from zhifu.ops.audit import AuditContext
from zhifu.runtime import Runtime, build_runtime

PASSWORD = "plum-orbit-velvet-canyon-42"
GENERATED = re.compile(r"^password \(shown once, change it after the first sign-in\): (\S+)$", re.M)
CREATED = re.compile(r"^created staff member (\S+) \(([0-9a-f-]{36})\) roles: (.+)$", re.M)

Env = dict[str, str | None]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """ZHIFU_HOME on a scratch directory with a migrated SQLite database."""
    unset: Env = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    env = unset | {"ZHIFU_HOME": str(tmp_path / "home"), "ZHIFU_LOG_FORMAT": "json"}
    result = _run(env, "db", "upgrade")
    assert result.exit_code == 0, result.output
    return env


@pytest.fixture
def runtime(env: Env) -> Iterator[Runtime]:
    """The CLI's home, for checking what the command did."""
    runtime = build_runtime(load_settings({k: v for k, v in env.items() if v is not None}))
    yield runtime
    runtime.close()


def _run(env: Env, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin, prog_name="zhifu")


def _create(env: Env, *args: str, stdin: str | None = PASSWORD + "\n") -> Result:
    extra = ("--password-stdin",) if stdin is not None else ()
    return _run(env, "staff", "create", *args, *extra, stdin=stdin)


def _assert_usage_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Usage: zhifu staff create" in result.output
    assert f"Error: {message}" in result.output, result.output
    assert "Traceback" not in result.output


def _signs_in(runtime: Runtime, username: str, password: str) -> bool:
    try:
        result = runtime.identity.login(
            SubjectKind.STAFF,
            username,
            password,
            browser_token=None,
            user_agent="pytest",
            ctx=AuditContext(source="127.0.0.1"),
        )
    except AuthenticationError:
        return False
    return result.status == "authenticated" and result.session_token is not None


def _only_staff(runtime: Runtime) -> StaffView:
    [view] = runtime.staff.list_staff()
    return view


def test_create_an_admin_with_the_password_from_stdin(env: Env, runtime: Runtime) -> None:
    result = _create(env, "Alice", "--name", "Alice  Li", "--role", "admin")
    assert result.exit_code == 0, (result.output, result.exception)
    match = CREATED.search(result.output)
    assert match is not None, result.output
    view = _only_staff(runtime)
    assert match.groups() == ("alice", str(view.id), "admin")
    assert PASSWORD not in result.output
    assert GENERATED.search(result.output) is None
    assert (view.username, view.name, view.roles) == ("alice", "Alice Li", ("admin",))
    assert view.created_by == "system:cli"
    [event] = runtime.audit.list(10, action_prefix="identity.staff.create")
    assert (event.actor, event.target) == ("system:cli", f"staff:{view.id}")
    assert event.details == {"username": "alice", "roles": ["admin"]}
    assert _signs_in(runtime, "alice", PASSWORD)
    assert not _signs_in(runtime, "alice", PASSWORD + "x")


def test_several_roles_and_a_windows_line_ending(env: Env, runtime: Runtime) -> None:
    result = _create(
        env,
        "bob",
        "--name",
        "Bob",
        "--role",
        "teller",
        "--role",
        "auditor",
        "--role",
        "teller",
        stdin=PASSWORD + "\r\nignored second line\n",
    )
    assert result.exit_code == 0, result.output
    assert "roles: auditor, teller" in result.output
    assert _only_staff(runtime).roles == ("auditor", "teller")
    assert _signs_in(runtime, "bob", PASSWORD)


def test_no_role_is_shown_as_a_dash(env: Env, runtime: Runtime) -> None:
    result = _create(env, "carol", "--name", "Carol")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("roles: -")
    assert _only_staff(runtime).roles == ()


def test_a_generated_password_is_printed_once_when_stdin_is_not_a_terminal(
    env: Env, runtime: Runtime
) -> None:
    first = _create(env, "dave", "--name", "Dave Wu", "--role", "admin", stdin=None)
    second = _create(env, "erin", "--name", "Erin Wu", stdin=None)
    passwords = []
    for result in (first, second):
        assert result.exit_code == 0, result.output
        assert CREATED.search(result.output) is not None
        [password] = GENERATED.findall(result.output)
        assert result.output.count(password) == 1
        assert len(password) >= 20
        passwords.append(password)
    assert passwords[0] != passwords[1]
    assert _signs_in(runtime, "dave", passwords[0])
    assert _signs_in(runtime, "erin", passwords[1])
    assert not _signs_in(runtime, "dave", passwords[1])


def test_the_password_is_prompted_for_on_a_terminal(
    env: Env, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CliRunner's stdin is a pipe; make it look like a terminal.
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    result = _run(
        env, "staff", "create", "frank", "--name", "Frank", stdin=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output
    assert "Repeat for confirmation:" in result.output
    assert PASSWORD not in result.output
    assert GENERATED.search(result.output) is None
    assert _signs_in(runtime, "frank", PASSWORD)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "password must be at least 15 characters"),
        ("short-pass-1", "password must be at least 15 characters"),
        ("1234567890qwerty", "this password appears in lists of common or leaked passwords"),
        ("my-name-is-grace-ok", "password must not contain your name"),
    ],
)
def test_a_weak_password_is_a_usage_error_and_creates_nothing(
    env: Env, runtime: Runtime, password: str, message: str
) -> None:
    result = _create(env, "grace", "--name", "Grace", "--role", "admin", stdin=password + "\n")
    _assert_usage_error(result, message)
    if password:
        assert password not in result.output
    assert runtime.staff.list_staff() == []


def test_a_duplicate_username_is_an_error_and_changes_nothing(env: Env, runtime: Runtime) -> None:
    assert _create(env, "heidi", "--name", "Heidi", "--role", "teller").exit_code == 0
    before = _only_staff(runtime)
    again = _create(env, "HEIDI", "--name", "Another Heidi", "--role", "admin")
    _assert_usage_error(again, "username 'heidi' is taken")
    assert _only_staff(runtime) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ab", "--name", "Ab"], "username must be 3 to 32 characters"),
        (["a" * 33, "--name", "Ab"], "username must be 3 to 32 characters"),
        (["ivan", "--name", "Ivan 2nd"], "name cannot contain digits"),
        (["ivan", "--name", " "], "name must be 1 to 64 characters long"),
        (["ivan", "--name", "Ivan", "--role", "root"], "Invalid value for '--role'"),
    ],
)
def test_bad_input_is_a_usage_error_and_creates_nothing(
    env: Env, runtime: Runtime, args: list[str], message: str
) -> None:
    _assert_usage_error(_create(env, *args), message)
    assert runtime.staff.list_staff() == []


def test_the_name_is_required(env: Env) -> None:
    _assert_usage_error(_create(env, "judy"), "Missing option '--name'")


def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    unset: Env = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    env = unset | {"ZHIFU_HOME": str(tmp_path / "fresh"), "ZHIFU_LOG_FORMAT": "json"}
    result = _create(env, "kim", "--name", "Kim")
    assert result.exit_code == 1, result.output
    assert "run 'zhifu db upgrade' first" in result.output


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag: str) -> None:
    result = CliRunner().invoke(main, ["staff", "create", flag], prog_name="zhifu")
    assert result.exit_code == 0, result.output
    assert "Usage: zhifu staff create [OPTIONS] USERNAME" in result.output
    assert "Create a staff member" in result.output
    for option in ("--name", "--role", "--password-stdin"):
        assert option in result.output
    assert "[teller|risk_analyst|auditor|admin]" in result.output
    group = CliRunner().invoke(main, ["staff", flag], prog_name="zhifu")
    assert group.exit_code == 0
    assert "create" in group.output
