"""Path confinement of the files capability, on a real filesystem.

Each escape kind has its own test and each asserts the rule's own message, so
removing a check makes its test fail (another check catching the same path
later would give a different message).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beeyard.agent.config import AgentConfig, FilesConfig, SpoolConfig
from beeyard.agent.files import confine
from beeyard.agent.files.confine import (
    Denied,
    NotFound,
    Policy,
    build_policy,
    check_size,
    open_confined,
    policy_for,
    resolve,
)

OUTSIDE = "outside every configured root"
LINK_OUTSIDE = "symbolic link in the path leads outside its root"
PROTECTED = "agent's own files are never reachable"
CHANGED = "changed while it was being opened"
DOTDOT = re.escape("'..' is not allowed")


def _tree(base: Path) -> tuple[Path, Path]:
    """root/{a.txt, sub/b.txt, sub/deep/c.txt} and outside/secret.txt beside it."""
    root = base / "root"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deep" / "c.txt").write_text("c")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    return root, outside


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _tree(tmp_path)[0]


@pytest.fixture
def outside(root: Path) -> Path:
    return root.parent / "outside"


@pytest.fixture
def policy(root: Path) -> Policy:
    return build_policy(FilesConfig(roots=(root,)))


def _read(policy: Policy, path: str) -> Path:
    return resolve(policy, path, must_exist=True, for_write=False)


# --- what is allowed -----------------------------------------------------------


def test_paths_inside_the_root_resolve_to_their_real_path(policy: Policy, root: Path) -> None:
    assert _read(policy, str(root / "sub" / "b.txt")) == root / "sub" / "b.txt"
    assert _read(policy, "sub/deep/c.txt") == root / "sub" / "deep" / "c.txt"  # first root
    assert _read(policy, str(root)) == root


def test_trailing_slashes_dots_and_double_slashes_are_harmless(
    policy: Policy, root: Path,
) -> None:
    assert _read(policy, str(root) + "/sub/") == root / "sub"
    assert _read(policy, str(root) + "//sub/./deep//c.txt") == root / "sub" / "deep" / "c.txt"
    assert _read(policy, "./sub/.") == root / "sub"
    assert _read(policy, str(root) + "/") == root


def test_a_symlink_staying_inside_the_root_is_followed(policy: Policy, root: Path) -> None:
    (root / "rel").symlink_to("sub/deep/c.txt")
    (root / "abs").symlink_to(root / "sub")
    (root / "sub" / "up").symlink_to("../a.txt")  # '..' in a target, still inside
    assert _read(policy, "rel") == root / "sub" / "deep" / "c.txt"
    assert _read(policy, "abs/b.txt") == root / "sub" / "b.txt"
    assert _read(policy, "sub/up") == root / "a.txt"


def test_a_root_that_is_a_symlink_is_reached_by_either_name(tmp_path: Path) -> None:
    real, _ = _tree(tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    policy = build_policy(FilesConfig(roots=(Path(str(alias) + "/"),)))
    assert _read(policy, str(alias / "a.txt")) == real / "a.txt"
    assert _read(policy, str(real / "a.txt")) == real / "a.txt"
    (real / "via-alias").symlink_to(alias / "sub")  # absolute target naming the alias
    assert _read(policy, "via-alias/b.txt") == real / "sub" / "b.txt"


def test_a_root_symlink_is_pinned_when_the_policy_is_built(tmp_path: Path) -> None:
    """Whoever can rewrite the root's symlink (outside the root) cannot move the root."""
    real, outside = _tree(tmp_path)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    policy = build_policy(FilesConfig(roots=(alias,)))
    alias.unlink()
    alias.symlink_to(outside)
    with pytest.raises(NotFound):
        _read(policy, str(alias / "secret.txt"))  # looked up in the pinned real root


def test_missing_final_component_is_allowed_only_when_it_need_not_exist(
    policy: Policy, root: Path,
) -> None:
    with pytest.raises(NotFound, match="no such file"):
        _read(policy, "new.txt")
    path = resolve(policy, "sub/new.txt", must_exist=False, for_write=True)
    assert path == root / "sub" / "new.txt"
    with pytest.raises(NotFound, match="no such file"):  # the parent must exist
        resolve(policy, "nodir/new.txt", must_exist=False, for_write=True)
    with pytest.raises(NotFound, match="not a directory"):
        resolve(policy, "a.txt/new.txt", must_exist=False, for_write=True)


def test_nested_roots_pick_the_deepest(tmp_path: Path) -> None:
    """Patterns with a slash are relative to the root the path is taken under."""
    root, _ = _tree(tmp_path)
    policy = build_policy(FilesConfig(roots=(root, root / "sub"), deny=("sub/b.txt",)))
    assert _read(policy, str(root / "sub" / "b.txt")) == root / "sub" / "b.txt"
    policy = build_policy(FilesConfig(roots=(root / "sub", root), deny=("sub/b.txt",)))
    assert _read(policy, str(root / "sub" / "b.txt")) == root / "sub" / "b.txt"
    (root / "sub" / "sub").mkdir()
    (root / "sub" / "sub" / "b.txt").write_text("b")
    with pytest.raises(Denied, match=re.escape("pattern 'sub/b.txt'")):  # below the root root/sub
        _read(policy, str(root / "sub" / "sub" / "b.txt"))


def test_roots_that_do_not_exist_are_left_out(tmp_path: Path) -> None:
    policy = build_policy(FilesConfig(roots=(tmp_path / "missing",)))
    assert policy.roots == ()
    with pytest.raises(Denied, match="no file roots are configured"):
        _read(policy, str(tmp_path / "missing"))


# --- escapes ---------------------------------------------------------------------


def test_relative_dotdot_is_rejected(policy: Policy) -> None:
    with pytest.raises(Denied, match=DOTDOT):
        _read(policy, "../outside/secret.txt")
    with pytest.raises(Denied, match=DOTDOT):
        _read(policy, "sub/../a.txt")  # even when it would stay inside


def test_absolute_dotdot_is_rejected(policy: Policy, root: Path) -> None:
    with pytest.raises(Denied, match=DOTDOT):
        _read(policy, str(root) + "/../outside/secret.txt")


def test_absolute_path_outside_every_root_is_rejected(policy: Policy, outside: Path) -> None:
    with pytest.raises(Denied, match=OUTSIDE) as caught:
        _read(policy, str(outside / "secret.txt"))
    assert "secret" not in str(caught.value)
    with pytest.raises(Denied, match=OUTSIDE):
        _read(policy, "/")


def test_a_root_is_a_prefix_of_components_not_of_characters(
    policy: Policy, root: Path,
) -> None:
    sibling = Path(str(root) + "2")
    sibling.mkdir()
    (sibling / "x").write_text("x")
    with pytest.raises(Denied, match=OUTSIDE):
        _read(policy, str(sibling / "x"))


def test_names_are_case_sensitive(policy: Policy, root: Path) -> None:
    upper = root.parent / root.name.upper()
    upper.mkdir()
    (upper / "a.txt").write_text("A")
    with pytest.raises(Denied, match=OUTSIDE):
        _read(policy, str(upper / "a.txt"))


def test_final_symlink_leading_outside_is_rejected(
    policy: Policy, root: Path, outside: Path,
) -> None:
    (root / "link").symlink_to(outside / "secret.txt")
    with pytest.raises(Denied, match=LINK_OUTSIDE):
        _read(policy, "link")
    with pytest.raises(Denied, match=LINK_OUTSIDE):  # writing through it either
        resolve(policy, "link", must_exist=False, for_write=True)


def test_dangling_symlink_leading_outside_says_the_same_as_an_existing_one(
    policy: Policy, root: Path, outside: Path,
) -> None:
    """Nothing about what lies outside is revealed, not even whether it exists."""
    (root / "exists").symlink_to(outside / "secret.txt")
    (root / "dangles").symlink_to(outside / "nothing-here")
    with pytest.raises(Denied) as existing:
        resolve(policy, "exists", must_exist=False, for_write=True)
    with pytest.raises(Denied) as dangling:
        resolve(policy, "dangles", must_exist=False, for_write=True)
    assert str(existing.value) == str(dangling.value)
    assert LINK_OUTSIDE in str(dangling.value)
    assert type(existing.value) is type(dangling.value) is Denied


def test_dangling_symlink_inside_the_root_is_not_found(policy: Policy, root: Path) -> None:
    (root / "dangles").symlink_to("sub/not-yet")
    with pytest.raises(NotFound):
        _read(policy, "dangles")
    assert resolve(policy, "dangles", must_exist=False, for_write=True) == (
        root / "sub" / "not-yet"
    )


def test_symlink_in_the_middle_leading_outside_is_rejected(
    policy: Policy, root: Path, outside: Path,
) -> None:
    (root / "sub" / "door").symlink_to(outside)
    with pytest.raises(Denied, match=LINK_OUTSIDE):
        _read(policy, "sub/door/secret.txt")
    with pytest.raises(Denied, match=LINK_OUTSIDE):
        resolve(policy, "sub/door/new.txt", must_exist=False, for_write=True)


def test_relative_symlink_climbing_out_is_rejected(policy: Policy, root: Path) -> None:
    (root / "sub" / "climb").symlink_to("../../outside/secret.txt")
    with pytest.raises(Denied, match=LINK_OUTSIDE):
        _read(policy, "sub/climb")


def test_symlink_that_leaves_and_comes_back_is_rejected(
    policy: Policy, root: Path, outside: Path,
) -> None:
    """Every hop must stay inside, not just the end: the outside hop could change."""
    (outside / "back").symlink_to(root / "a.txt")
    (root / "detour").symlink_to(outside / "back")
    with pytest.raises(Denied, match=LINK_OUTSIDE):
        _read(policy, "detour")


@pytest.mark.parametrize("links", [
    {"self": "self"},
    {"l1": "l2", "l2": "l1"},
    {"l1": "sub/l2", "sub/l2": "../l1"},
])
def test_symlink_loops_are_rejected(
    policy: Policy, root: Path, links: dict[str, str],
) -> None:
    for name, target in links.items():
        (root / name).symlink_to(target)
    first = next(iter(links))
    with pytest.raises(Denied, match="too many levels of symbolic links"):
        _read(policy, first)


def test_a_long_chain_within_the_kernel_limit_is_followed(policy: Policy, root: Path) -> None:
    previous = "a.txt"
    for i in range(confine.MAX_LINKS):
        (root / f"c{i}").symlink_to(previous)
        previous = f"c{i}"
    assert _read(policy, previous) == root / "a.txt"


# --- malformed requests -------------------------------------------------------------


@pytest.mark.parametrize("requested", [None, b"a.txt", 3, ["a.txt"], Path("a.txt")])
def test_non_str_input_is_rejected(policy: Policy, requested: object) -> None:
    with pytest.raises(Denied, match="must be a string"):
        resolve(policy, requested, must_exist=True, for_write=False)


def test_nul_bytes_are_rejected(policy: Policy) -> None:
    with pytest.raises(Denied, match="NUL byte"):
        _read(policy, "a.txt\0.key")


def test_empty_path_is_rejected(policy: Policy) -> None:
    with pytest.raises(Denied, match="empty"):
        _read(policy, "")


def test_over_long_paths_and_components_are_rejected(policy: Policy) -> None:
    with pytest.raises(Denied, match="longer than 4095 bytes"):
        _read(policy, "/".join(["d" * 100] * 41))
    with pytest.raises(Denied, match="component is longer than 255 bytes"):
        _read(policy, "sub/" + "é" * 128)  # 256 bytes in UTF-8


def test_text_that_is_no_file_name_is_rejected(policy: Policy) -> None:
    with pytest.raises(Denied, match="not a valid file name"):
        _read(policy, "a\ud800b")


# --- deny patterns -----------------------------------------------------------------


@pytest.mark.parametrize(("relative", "pattern"), [
    ("server.key", "*.key"),
    ("sub/deep/server.key", "*.key"),
    ("sub/.env", ".env*"),
    ("sub/deep/.env.production", ".env*"),
    ("sub/.ssh/config", ".ssh"),
    ("sub/deep/id_ed25519.pub", "id_ed25519*"),
    ("vault.kdbx", "*.kdbx"),
    ("etc/shadow", "shadow"),
])
def test_default_deny_patterns_match_at_any_depth(
    root: Path, relative: str, pattern: str,
) -> None:
    policy = build_policy(FilesConfig(roots=(root,)))
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("secret")
    with pytest.raises(Denied, match=re.escape(f"pattern '{pattern}'")):
        _read(policy, relative)
    with pytest.raises(Denied, match=re.escape(f"pattern '{pattern}'")):
        _read(policy, str(target))


def test_deny_patterns_are_case_sensitive(root: Path) -> None:
    (root / "README.KEY").write_text("not a key")
    policy = build_policy(FilesConfig(roots=(root,), deny=("*.key",)))
    assert _read(policy, "README.KEY") == root / "README.KEY"


def test_a_pattern_with_a_slash_matches_the_path_below_the_root(root: Path) -> None:
    policy = build_policy(FilesConfig(roots=(root,), deny=("sub/deep",)))
    with pytest.raises(Denied, match="pattern 'sub/deep'"):  # the directory and all below
        _read(policy, "sub/deep/c.txt")
    assert _read(policy, "sub/b.txt") == root / "sub" / "b.txt"


def test_a_symlink_to_a_denied_file_is_denied(root: Path) -> None:
    (root / "server.key").write_text("secret")
    (root / "notes").symlink_to("server.key")
    (root / "sub" / "hidden").mkdir()
    (root / "sub" / "hidden" / "x").write_text("x")
    (root / "dir").symlink_to("sub/hidden")
    policy = build_policy(FilesConfig(roots=(root,), deny=("*.key", "hidden")))
    with pytest.raises(Denied, match=r"pattern '\*.key'"):
        _read(policy, "notes")
    with pytest.raises(Denied, match="pattern 'hidden'"):
        _read(policy, "dir/x")


def test_a_denied_name_is_denied_even_if_it_links_to_an_allowed_file(root: Path) -> None:
    (root / "api.key").symlink_to("a.txt")
    policy = build_policy(FilesConfig(roots=(root,), deny=("*.key",)))
    with pytest.raises(Denied, match=re.escape("pattern '*.key'")):
        _read(policy, "api.key")


def test_a_missing_file_with_a_denied_name_cannot_be_created(policy: Policy) -> None:
    with pytest.raises(Denied, match=r"pattern '\*.pem'"):
        resolve(policy, "sub/new.pem", must_exist=False, for_write=True)


def test_denied_by_names_the_rule_for_listings(policy: Policy) -> None:
    """A listing hides denied entries with the same rule the resolver applies."""
    assert policy.denied_by(["sub", "x.key"]) == "*.key"
    assert policy.denied_by(["sub", "x.txt"]) is None


# --- the agent's own files ------------------------------------------------------------


@pytest.fixture
def agent_in_root(root: Path) -> tuple[Policy, AgentConfig]:
    etc = root / "etc-beeyard"
    etc.mkdir()
    (etc / "agent.toml").write_text("")
    elsewhere = root / "tokens"
    elsewhere.mkdir()
    (elsewhere / "agent.token").write_text("bag_x")
    (elsewhere / ".agent.token.123.tmp").write_text("bag_y")
    (root / "spool").mkdir()
    (root / "spool" / "0001.msgpack").write_text("")
    (root / "ca.crt").write_text("")
    config = AgentConfig(
        server="http://127.0.0.1:8420", server_id=1, token_file=elsewhere / "agent.token",
        spool=SpoolConfig(root / "spool"), ca_file=root / "ca.crt",
        files=FilesConfig(roots=(root,), deny=()), path=etc / "agent.toml",
    )
    return policy_for(config), config


@pytest.mark.parametrize("relative", [
    "etc-beeyard", "etc-beeyard/agent.toml", "etc-beeyard/new.toml",
    "tokens/agent.token", "tokens/.agent.token.123.tmp", "tokens/.agent.token.999.tmp",
    "spool", "spool/0001.msgpack", "ca.crt",
])
def test_the_agents_own_files_are_always_denied(
    agent_in_root: tuple[Policy, AgentConfig], relative: str,
) -> None:
    policy, _ = agent_in_root
    with pytest.raises(Denied, match=PROTECTED):
        resolve(policy, relative, must_exist=False, for_write=False)
    with pytest.raises(Denied, match=PROTECTED):
        resolve(policy, relative, must_exist=False, for_write=True)


def test_the_agents_own_files_are_denied_through_a_symlink(
    agent_in_root: tuple[Policy, AgentConfig], root: Path,
) -> None:
    policy, _ = agent_in_root
    (root / "innocent").symlink_to("tokens/agent.token")
    (root / "door").symlink_to("etc-beeyard")
    with pytest.raises(Denied, match=PROTECTED):
        _read(policy, "innocent")
    with pytest.raises(Denied, match=PROTECTED):
        _read(policy, "door/agent.toml")


def test_a_symlink_passing_through_the_agents_dirs_is_denied(
    agent_in_root: tuple[Policy, AgentConfig], root: Path,
) -> None:
    """Walking through the spool would reveal what is in it (found / not found)."""
    (root / "probe").symlink_to("spool/0001.msgpack/../../a.txt")
    with pytest.raises(Denied, match=PROTECTED):
        _read(policy=agent_in_root[0], path="probe")


def test_a_directory_holding_the_agents_files_can_be_read_not_changed(
    agent_in_root: tuple[Policy, AgentConfig], root: Path,
) -> None:
    policy, _ = agent_in_root
    (root / "tokens" / "other").write_text("")
    assert _read(policy, "tokens") == root / "tokens"  # listing shows the directory...
    assert _read(policy, "tokens/other") == root / "tokens" / "other"
    with pytest.raises(Denied, match=PROTECTED):  # ...but it cannot be moved or deleted
        resolve(policy, "tokens", must_exist=True, for_write=True)


def test_a_root_itself_cannot_be_written(policy: Policy, root: Path) -> None:
    with pytest.raises(Denied, match="a root itself cannot be written"):
        resolve(policy, str(root), must_exist=True, for_write=True)


# --- hard links -------------------------------------------------------------------


def test_hard_links_are_not_detected_by_path(policy: Policy, root: Path, outside: Path) -> None:
    """Documented limit: a hard link is the file itself, under a name inside the
    root. Making one needs write access inside the root already (and, with
    fs.protected_hardlinks, rights on the target), so it grants nothing new."""
    os.link(outside / "secret.txt", root / "hard.txt")
    assert _read(policy, "hard.txt") == root / "hard.txt"


# --- size caps ----------------------------------------------------------------------


def test_size_caps_come_from_the_config_and_name_the_key(root: Path) -> None:
    policy = build_policy(FilesConfig(roots=(root,), max_read_bytes=10, max_write_bytes=20))
    assert (policy.max_read_bytes, policy.max_write_bytes) == (10, 20)
    check_size(policy, 10, for_write=False)
    check_size(policy, 20, for_write=True)
    with pytest.raises(Denied, match=r"limit of 10 bytes \(files.max_read_bytes\)"):
        check_size(policy, 11, for_write=False)
    with pytest.raises(Denied, match=r"limit of 20 bytes \(files.max_write_bytes\)"):
        check_size(policy, 21, for_write=True)


# --- open_confined ------------------------------------------------------------------


def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


def test_open_confined_reads_and_creates_inside_the_root(policy: Policy, root: Path) -> None:
    assert _read_fd(open_confined(policy, "sub/b.txt")) == b"b"
    fd = open_confined(policy, "sub/new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(b"new")
    assert (root / "sub" / "new.txt").read_bytes() == b"new"
    assert os.get_blocking(open_confined(policy, "a.txt")) is True  # O_NONBLOCK cleared


def test_open_confined_applies_the_policy(policy: Policy, root: Path) -> None:
    (root / "x.key").write_text("k")
    with pytest.raises(Denied, match=r"pattern '\*.key'"):
        open_confined(policy, "x.key")
    with pytest.raises(Denied, match=DOTDOT):
        open_confined(policy, "../outside/secret.txt")
    with pytest.raises(NotFound):
        open_confined(policy, "missing.txt")


def test_open_confined_refuses_what_is_not_a_regular_file(policy: Policy, root: Path) -> None:
    os.mkfifo(root / "fifo")  # opened without O_NONBLOCK this would hang the agent
    with pytest.raises(Denied, match="not a regular file"):
        open_confined(policy, "fifo")
    with pytest.raises(Denied, match="not a regular file"):
        open_confined(policy, "sub")


def test_open_confined_never_opens_the_parent_of_a_root(
    policy: Policy, root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_open(*args: object) -> int:
        raise AssertionError(f"opened {args}")

    monkeypatch.setattr(confine, "_open", no_open)
    with pytest.raises(Denied, match="not a regular file"):
        open_confined(policy, str(root))


def _swap_after_resolve(
    monkeypatch: pytest.MonkeyPatch, swap: object,
) -> None:
    """Run ``swap`` between the check and the open: the race an attacker would win."""
    real_resolve = confine._resolve

    def racing(*args: object, **kwargs: object) -> tuple[confine.Root, str]:
        result = real_resolve(*args, **kwargs)  # type: ignore[arg-type]
        swap()  # type: ignore[operator]
        return result

    monkeypatch.setattr(confine, "_resolve", racing)


def test_open_confined_catches_a_final_component_swapped_for_a_symlink(
    policy: Policy, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def swap() -> None:
        (root / "a.txt").unlink()
        (root / "a.txt").symlink_to(outside / "secret.txt")

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(Denied, match=CHANGED):
        open_confined(policy, "a.txt")


@pytest.mark.parametrize(("name", "flags"), [
    ("c.txt", os.O_RDONLY),
    ("new.txt", os.O_WRONLY | os.O_CREAT),
])
def test_open_confined_catches_a_directory_swapped_for_a_symlink(
    policy: Policy, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch,
    name: str, flags: int,
) -> None:
    (outside / "deep").mkdir()
    (outside / "deep" / "c.txt").write_text("outside")

    def swap() -> None:
        (root / "sub").rename(root / "moved")
        (root / "sub").symlink_to(outside)

    _swap_after_resolve(monkeypatch, swap)
    with pytest.raises(Denied, match=CHANGED):
        open_confined(policy, f"sub/deep/{name}", flags)
    assert not (outside / "deep" / "new.txt").exists()  # nothing is created outside


def test_o_nofollow_alone_refuses_a_final_component_swapped_for_a_symlink(
    policy: Policy, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first line of defence, without the fd check behind it."""
    def swap() -> None:
        (root / "a.txt").unlink()
        (root / "a.txt").symlink_to(outside / "secret.txt")

    _swap_after_resolve(monkeypatch, swap)
    monkeypatch.setattr(confine, "_verify_fd", lambda fd, expected: None)
    with pytest.raises(Denied, match=CHANGED):
        open_confined(policy, "a.txt")


def test_the_fd_check_alone_refuses_a_final_component_swapped_for_a_symlink(
    policy: Policy, root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second line of defence, without O_NOFOLLOW in front of it."""
    def swap() -> None:
        (root / "a.txt").unlink()
        (root / "a.txt").symlink_to(outside / "secret.txt")

    _swap_after_resolve(monkeypatch, swap)
    monkeypatch.setattr(os, "O_NOFOLLOW", 0)
    with pytest.raises(Denied, match=CHANGED):
        open_confined(policy, "a.txt")


def test_a_rename_between_check_and_open_is_a_documented_limit(
    root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Renaming a denied file onto a checked name (which needs write access inside
    the root already) is not seen: the path is the one checked, only the content
    changed. Deny patterns guard names, not inodes, as for hard links."""
    (root / "sub" / "x.key").write_text("secret")
    policy = build_policy(FilesConfig(roots=(root,), deny=("*.key",)))

    def swap() -> None:
        (root / "sub" / "x.key").rename(root / "sub" / "b.txt")

    _swap_after_resolve(monkeypatch, swap)
    assert _read_fd(open_confined(policy, "sub/b.txt")) == b"secret"


def test_verify_fd_falls_back_to_device_and_inode_without_proc(
    root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fd = os.open(root / "a.txt", os.O_RDONLY)
    try:
        real_readlink = os.readlink

        def no_proc(path: str, *args: object, **kwargs: object) -> str:
            if str(path).startswith("/proc/self/fd/"):
                raise FileNotFoundError(path)
            return real_readlink(path)

        monkeypatch.setattr(os, "readlink", no_proc)
        confine._verify_fd(fd, str(root / "a.txt"))
        with pytest.raises(Denied, match=CHANGED):
            confine._verify_fd(fd, str(root / "sub" / "b.txt"))
    finally:
        os.close(fd)


# --- the property ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def playground() -> Iterator[tuple[Policy, Path]]:
    """A root full of traps: links out, links in, loops, denied names."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp).resolve()
        root, outside = _tree(base)
        (root / "out").symlink_to(outside)
        (root / "out-file").symlink_to(outside / "secret.txt")
        (root / "in").symlink_to("sub")
        (root / "loop").symlink_to("loop")
        (root / "climb").symlink_to("../outside")
        (root / "sub" / "x.key").write_text("k")
        (root / "spool").mkdir()
        policy = build_policy(FilesConfig(roots=(root,)), protected_trees=(root / "spool",))
        yield policy, root


_COMPONENTS = st.sampled_from([
    "..", ".", "", "sub", "deep", "a.txt", "b.txt", "c.txt", "out", "out-file", "in", "loop",
    "climb", "x.key", "spool", "outside", "secret.txt", "root", "ROOT", "new",
]) | st.text(max_size=12)


@st.composite
def _paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_COMPONENTS, max_size=8))
    prefix = draw(st.sampled_from(["", "/", "ROOT/", "BASE/"]))
    return prefix + "/".join(parts)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requested=_paths() | st.text(max_size=60), must_exist=st.booleans(),
       for_write=st.booleans())
def test_resolve_either_refuses_or_stays_inside_the_root(
    playground: tuple[Policy, Path], requested: str, must_exist: bool, for_write: bool,
) -> None:
    policy, root = playground
    requested = requested.replace("ROOT/", str(root) + "/").replace("BASE/", str(root.parent)
                                                                    + "/")
    try:
        result = resolve(policy, requested, must_exist=must_exist, for_write=for_write)
    except Denied:
        return
    assert result == root or str(result).startswith(str(root) + "/")
    relative = result.relative_to(root).parts
    assert policy.denied_by(relative) is None
    assert not policy.is_protected(str(result))
    assert os.path.realpath(result) == str(result)  # no symlink left in what is returned
