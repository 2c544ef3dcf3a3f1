# shellcheck shell=bash
# Helpers sourced by every script in scripts/: messages, apt installs (as root
# or through sudo), Debian's python3 and the venvs made from it.
# Callers set `repo` (the checkout's absolute path) before sourcing this file,
# and may set `die_status` (default 1) for the exit status of `die`.

# Always Debian's interpreter: a pyenv or conda python may come first on PATH.
SYSTEM_PYTHON=${PYPID_SYSTEM_PYTHON:-/usr/bin/python3}

say() { printf 'scripts/%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
    say "error: $*"
    exit "${die_status:-1}"
}

# Installs reach PyPI (or the PIP_INDEX_URL the caller chose) and nothing else:
# no pip.conf, no local find-links or extra indexes that a fresh machine lacks.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_NO_INDEX PIP_USER PIP_TARGET PIP_PREFIX \
    PIP_REQUIRE_VIRTUALENV PYTHONHOME PYTHONPATH VIRTUAL_ENV
[ -t 1 ] || export PIP_PROGRESS_BAR=off

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "root is needed for: $*; run this as root, or install and configure sudo"
    fi
}

# Print the Debian packages among the arguments that are not installed.
apt_missing() {
    local pkg
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

_apt_updated=
apt_update_once() {
    [ -z "$_apt_updated" ] || return 0
    _apt_updated=1
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
        say "warning: apt-get update failed; trying the package lists already on this machine"
}

# Install the Debian packages that are missing (apt-get update first, once).
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install these Debian 12 packages by hand: $*"
    local missing
    missing=$(apt_missing "$@")
    [ -n "$missing" ] || return 0
    apt_update_once
    # shellcheck disable=SC2086  # one package name per word
    say "apt-get install" $missing
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends -o Dpkg::Use-Pty=0 $missing >&2 ||
        die "apt-get install failed for:" $missing
}

# A minimal Debian (debootstrap minbase, the debian:12 image) has no python3
# at all: install it (and venv) before anything runs Python.
ensure_system_python() {
    [ -x "$SYSTEM_PYTHON" ] && return 0
    [ "$SYSTEM_PYTHON" = /usr/bin/python3 ] ||
        die "PYPID_SYSTEM_PYTHON=$SYSTEM_PYTHON does not exist"
    say "no /usr/bin/python3 on this machine: installing Debian's python3 and python3-venv"
    apt_install python3 python3-venv
    [ -x "$SYSTEM_PYTHON" ] || die "python3 is installed but $SYSTEM_PYTHON is still missing"
}

# Debian splits venv and ensurepip into python3-venv; install it when missing.
ensure_venv_module() {
    ensure_system_python
    if ! "$SYSTEM_PYTHON" -I -c 'import ensurepip, venv' >/dev/null 2>&1; then
        say "the venv module is missing from $SYSTEM_PYTHON: installing python3-venv"
        apt_install python3-venv
        "$SYSTEM_PYTHON" -I -c 'import ensurepip, venv' ||
            die "python3-venv is installed but $SYSTEM_PYTHON still cannot import venv/ensurepip"
    fi
}

# Create the venv DIR from SYSTEM_PYTHON, or recreate it when it is broken, has
# no pip, or was made by another interpreter.
ensure_venv() {
    local dir=$1 want have
    ensure_system_python
    want=$("$SYSTEM_PYTHON" -I -c 'import sys; print(sys.base_prefix, sys.version)')
    if [ -x "$dir/bin/python" ]; then
        have=$("$dir/bin/python" -I -c 'import pip, sys; print(sys.base_prefix, sys.version)' \
            2>/dev/null || true)
        [ "$have" = "$want" ] && return 0
        say "$dir was not made by $SYSTEM_PYTHON or is broken: recreating it"
        rm -rf -- "$dir"
    fi
    ensure_venv_module
    say "creating $dir with $SYSTEM_PYTHON -m venv"
    "$SYSTEM_PYTHON" -m venv "$dir" || die "$SYSTEM_PYTHON -m venv $dir failed"
}

# pip install, quietly: -q, and setuptools' notes (the "Editable installation"
# box, deprecation notices for a pyproject that must also build on bookworm's
# setuptools 66) are UserWarnings, silenced for this command only. Errors
# still show: pip prints the backend's output when a build fails.
pip_install() {
    local python=$1
    shift
    PYTHONWARNINGS=ignore::UserWarning "$python" -m pip install --quiet "$@"
}

# The stamp that says what a venv was last installed from: pyproject.toml's
# hash plus whatever else the caller passes (a package list, a date).
stamp_of() {
    # shellcheck disable=SC2154  # repo: set by the sourcing script
    printf '%s %s\n' "$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)" "$*"
}

# One line naming the interpreter and the versions of the distributions given.
versions_line() {
    local python=$1
    shift
    "$python" - "$@" <<'EOF'
import importlib.metadata as md
import sys

found = []
for name in sys.argv[1:]:
    try:
        found.append(f"{name}={md.version(name)}")
    except md.PackageNotFoundError:
        found.append(f"{name}=MISSING")
print("versions: python", sys.version.split()[0], *found)
EOF
}
